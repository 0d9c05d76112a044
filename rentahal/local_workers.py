"""Worker nodes the broker runs itself (`local_workers`), so a fresh machine hears, speaks,
chats and reads images out of the box, with no GPU, no internet and no second command.

Each is an ordinary `rentahal worker` child process on 127.0.0.1, admitted to the registry
once its model has loaded, and reached with a key only this broker holds; a crash of one
shows up as falling health like any worker's. They are stopped with the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys

import httpx
import structlog

from rentahal.admin.catalog import WorkerCatalog
from rentahal.config import Settings
from rentahal.core.specs import WorkerSpec
from rentahal.net import free_port
from rentahal.routing.registry import Registry
from rentahal.worker.engines import EngineOptions, EngineUnavailable, pick

log = structlog.get_logger(__name__)


NAME_PREFIX = "local-"
LOAD_WITHIN = 180.0  # seconds a local worker may take to load its model
STOP_WITHIN = 5.0


class LocalWorkers:
    """Admitted and removed through the catalog, as the broker itself (no actor)."""

    def __init__(self, settings: Settings, registry: Registry, catalog: WorkerCatalog) -> None:
        self._settings = settings
        self._registry = registry
        self._catalog = catalog
        self._processes: list[asyncio.subprocess.Process] = []
        self._admissions: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Spawn the configured roles; each joins the registry when it has loaded."""
        settings = self._settings
        # Last run's local workers wait for keys they will never get: start clean.
        for worker in self._registry:
            if worker.name.startswith(NAME_PREFIX) and worker.joined:
                await self._catalog.remove_worker(None, worker.name)
        for offset, role in enumerate(settings.local_workers):
            try:
                engine = pick(role, None, EngineOptions())
            except EngineUnavailable as exc:
                log.warning("local_worker.unavailable", role=role, reason=str(exc))
                continue
            port = (
                free_port()
                if settings.local_worker_port == 0
                else settings.local_worker_port + offset
            )
            key = secrets.token_urlsafe(32)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rentahal",
                "worker",
                "--role",
                role,
                "--engine",
                engine.name,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                env={**os.environ, "RENTAHAL_WORKER_KEY": key},
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._processes.append(process)
            self._admissions.append(
                asyncio.create_task(self._admit(role, port, key, process), name=f"admit-{role}")
            )

    async def _admit(
        self, role: str, port: int, key: str, process: asyncio.subprocess.Process
    ) -> None:
        url = f"http://127.0.0.1:{port}/health"
        health: dict[str, object] = {}
        async with httpx.AsyncClient(timeout=2.0) as client, asyncio.timeout(LOAD_WITHIN):
            while process.returncode is None:
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get(url)
                    if response.status_code == 200:
                        health = response.json()
                        break
                await asyncio.sleep(0.25)
        if not health:
            log.error("local_worker.failed", role=role, status=process.returncode)
            return
        models = health.get("models")
        spec = WorkerSpec(
            name=f"{NAME_PREFIX}{role}",
            address=f"127.0.0.1:{port}",
            type=role,  # type: ignore[arg-type]
            models=[str(m) for m in models] if isinstance(models, list) else [],
            max_concurrency=1,
        )
        await self._catalog.add_worker(None, spec, key=key)
        log.info("local_worker.ready", role=role, port=port, engine=health.get("engine"))

    async def stop(self) -> None:
        for task in self._admissions:
            task.cancel()
        for process in self._processes:
            if process.returncode is None:
                process.terminate()
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), STOP_WITHIN)
            except TimeoutError:
                process.kill()
                await process.wait()
