"""`rentahal worker` as a real subprocess, for tests and benchmarks."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from rentahal.testing.broker import base_env
from rentahal.testing.process import ServerProcess, free_port


class WorkerProcess(ServerProcess):
    """A worker node on a free port of 127.0.0.1, up once its model has loaded (its /health
    answers 200). An outbound worker listens on no port: it counts as up once started."""

    def __init__(
        self,
        role: str,
        *args: str,
        outbound: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.role = role
        self.port = None if outbound else free_port()
        argv = [sys.executable, "-m", "rentahal", "worker", "--role", role, *args]
        if outbound:
            argv.append("--outbound")
        else:
            argv += ["--port", str(self.port)]
        # A proxy's own health is apart from the upstream's paths it forwards.
        health = "/_worker/health" if role == "proxy" else "/health"
        super().__init__(
            argv,
            None if outbound else f"{self.url}{health}",
            env={**base_env(), **(env or {})},
            startup_timeout=60.0,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
