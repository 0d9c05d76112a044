"""What every backend adapter offers the scheduler: a health probe and a generation stream."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from rentahal.routing.registry import WorkerState

# Generation options a user may set, and their bounds; anything else is dropped.
OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "max_tokens": (1, 32_768),
    "seed": (0, 2**31 - 1),
}


# Image options a user may set, with the SD web UI's bounds; every imagine backend holds
# them to these (each under its own protocol's names). Sides are also rounded down to a
# multiple of 8; seed -1 means "pick one".
IMAGE_BOUNDS: dict[str, tuple[float, float]] = {
    "steps": (1, 150),
    "cfg_scale": (0.0, 30.0),
    "width": (64, 2048),
    "height": (64, 2048),
    "seed": (-1, 2**32 - 1),
}
NEGATIVE_PROMPT_LIMIT = 2000


def generation_options(options: dict[str, Any]) -> dict[str, Any]:
    """The bounded subset of `options` that backends pass on."""
    picked: dict[str, Any] = {}
    for name, (low, high) in OPTION_BOUNDS.items():
        value = options.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = min(max(value, low), high)
            picked[name] = int(value) if isinstance(low, int) else float(value)
    return picked


@dataclass(frozen=True, slots=True)
class BackendRequest:
    prompt: str
    query_type: str
    model: str  # the model the backend is asked for (resolved from the user's model_name)
    model_type: str = "worker_node"
    model_name: str = ""  # what the user asked for
    stream: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    image: str | None = None  # base64
    audio: str | None = None  # base64


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: int
    models: tuple[str, ...] | None = None  # None when the protocol does not list models
    slots: int | None = None  # jobs the worker says it runs at once, if it says


class BackendError(Exception):
    """The worker failed the request (bad status, malformed answer, connection lost)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def input_refused(self) -> bool:
        """The worker judged the input itself bad: no retry, and no mark on its health."""
        return self.status in (400, 413, 422)


class Backend(ABC):
    """One worker protocol. Adapters hold no per-request state; one instance serves all."""

    kind: ClassVar[str]
    query_types: ClassVar[frozenset[str]]
    # Whether answers arrive in pieces. A job on a backend that answers in one piece has no
    # observable "running" phase, so the scheduler neither records nor announces one.
    streams: ClassVar[bool] = True

    def result_type(self, query_type: str) -> str:
        """What `generate` yields for `query_type`: "text", or base64 "audio" or "image"."""
        return "text"

    @abstractmethod
    async def probe(
        self, client: httpx.AsyncClient, worker: WorkerState, seconds: float
    ) -> HealthReport:
        """One health check; raises `httpx.HTTPError` when the worker cannot be reached."""

    @abstractmethod
    def generate(
        self, client: httpx.AsyncClient, worker: WorkerState, request: BackendRequest
    ) -> AsyncIterator[str]:
        """Yield the answer as text deltas (one delta when the backend does not stream)."""

    async def probe_model_list(
        self,
        client: httpx.AsyncClient,
        worker: WorkerState,
        url: str,
        seconds: float,
        names: Callable[[Any], Iterable[str]],
    ) -> HealthReport:
        """A health check that GETs the server's model list: healthy means 200 *and* a list
        in the protocol's shape (a 200 from something else is reported as 502)."""
        response = await client.get(url, headers=self.auth_headers(worker), timeout=seconds)
        if response.status_code != 200:
            return HealthReport(status=response.status_code)
        try:
            return HealthReport(status=200, models=tuple(names(response.json())))
        except (ValueError, KeyError, TypeError):
            return HealthReport(status=502)

    @staticmethod
    def auth_headers(worker: WorkerState) -> dict[str, str]:
        """`Authorization` with the key a joined worker gave, or from the environment
        variable the sysop named for it."""
        if worker.key:
            return {"Authorization": f"Bearer {worker.key}"}
        if worker.api_key_env and (key := os.environ.get(worker.api_key_env)):
            return {"Authorization": f"Bearer {key}"}
        return {}

    @staticmethod
    def raise_for_status(response: httpx.Response, body: bytes | None = None) -> None:
        if response.status_code == 200:
            return
        detail = (body or b"")[:300].decode("utf-8", "replace").strip()
        raise BackendError(
            f"worker answered HTTP {response.status_code}" + (f": {detail}" if detail else ""),
            status=response.status_code,
        )
