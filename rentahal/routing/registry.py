"""The live worker registry: the store's workers plus what only the running broker knows
(in-flight jobs, fresh health, the circuit breaker, measured latency)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from rentahal.backends.base import Endpoint
from rentahal.core.addresses import base_url
from rentahal.routing.circuit import CircuitBreaker
from rentahal.routing.health import Probe, next_health
from rentahal.routing.tunnel import SCHEME as TUNNEL_SCHEME
from rentahal.store.models import Worker


@dataclass(slots=True)
class WorkerState:
    name: str
    address: str
    kind: str
    capabilities: frozenset[str]
    models: tuple[str, ...]
    max_concurrency: int
    health_score: float
    blacklisted: bool
    last_active: datetime | None
    realm: str = ""
    api_key_env: str | None = None
    owner_id: str | None = None
    # A worker that joined with a worker token gave the broker a key for its /predict. The
    # key lives only in memory: after a broker restart the worker is not routed to until its
    # next heartbeat makes it register (and hand over the key) again.
    joined: bool = False
    key: str | None = None
    in_flight: int = 0
    removed: bool = False
    # The models the store lists for it; `models` may be more current (what its health
    # check reported), and only a change here replaces them.
    configured_models: tuple[str, ...] = ()
    ewma_latency: float | None = None
    specializations: dict[str, list[str]] = field(default_factory=dict)
    circuit: CircuitBreaker = field(default_factory=CircuitBreaker)

    @classmethod
    def from_row(cls, row: Worker) -> WorkerState:
        return cls(
            name=row.name,
            address=row.address,
            kind=row.kind,
            capabilities=frozenset(row.capabilities),
            # Until its first probe, the models its last one reported (a restarted broker
            # dispatches resumed jobs at once).
            models=tuple(row.models or row.reported_models),
            configured_models=tuple(row.models),
            max_concurrency=row.max_concurrency,
            health_score=row.health_score,
            blacklisted=row.blacklisted,
            last_active=row.last_active,
            realm=row.realm,
            api_key_env=row.api_key_env,
            owner_id=row.owner_id,
            joined=bool(row.tags.get("joined")),
            specializations={k: list(v) for k, v in row.specializations.items()},
        )

    @property
    def url(self) -> str:
        return base_url(self.address)

    @property
    def endpoint(self) -> Endpoint:
        """What a backend adapter needs to reach the worker, as of now. Its key is the one
        the worker gave when it joined, else the one in the environment variable the sysop
        named for it (read afresh each time, so a changed variable takes effect)."""
        key = self.key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        return Endpoint(
            name=self.name, kind=self.kind, url=self.url, models=self.models, key=key or None
        )

    @property
    def outbound(self) -> bool:
        """Connected to a broker by its own socket (`rentahal.routing.tunnel`): only that
        broker reaches it."""
        return self.address.startswith(f"{TUNNEL_SCHEME}://")

    @property
    def primary_type(self) -> str:
        return min(self.capabilities) if self.capabilities else "chat"

    @property
    def healthy(self) -> bool:
        """Registered, not blacklisted, with health left (a tripped circuit recovers soon)."""
        return not self.blacklisted and not self.removed and self.health_score > 0

    @property
    def alive(self) -> bool:
        """Could serve at all, from this broker: healthy, and not waiting for the key a
        joined worker hands over when it registers."""
        return self.healthy and not (self.joined and self.key is None)

    @property
    def available(self) -> bool:
        """Could take a job right now."""
        return self.alive and self.in_flight < self.max_concurrency and self.circuit.allows()

    def apply_health(self, probe: Probe, *, no_blacklist_imagine: bool) -> str | None:
        """Apply one health signal (a check, or a real job's outcome) by the rules of
        `next_health`; returns "blacklisted" or "readmitted" when the standing flipped."""
        change = next_health(
            self.health_score,
            self.blacklisted,
            probe,
            exempt=no_blacklist_imagine and "imagine" in self.capabilities,
        )
        self.health_score, self.blacklisted = change.score, change.blacklisted
        return change.event

    def record_latency(self, seconds: float, weight: float = 0.2) -> None:
        """Exponentially weighted mean of successful jobs' processing times."""
        previous = self.ewma_latency
        self.ewma_latency = (
            seconds if previous is None else weight * seconds + (1 - weight) * previous
        )

    def serves(self, query_type: str, model_name: str) -> bool:
        """Can this worker run the query at all (ignoring health and load)?

        A query names this worker, one of its models, or nothing (any capable worker).
        """
        if query_type not in self.capabilities:
            return False
        if not model_name or model_name == self.name or model_name in self.models:
            return True
        # Ollama's names: "llama3" and "llama3:latest" are one model.
        base = model_name.removesuffix(":latest")
        return base in self.models or f"{base}:latest" in self.models

    def model_for(self, model_name: str) -> str:
        """The model to ask the backend for: the named one, else (nothing named, this
        worker named, or a pool or realm `$NAME`) the worker's first."""
        if model_name and model_name != self.name and not model_name.startswith("$"):
            return model_name
        return self.models[0] if self.models else ""


class Registry:
    """Workers by name. The store is the source of truth for membership; this adds live state."""

    def __init__(self, new_circuit: Callable[[], CircuitBreaker] = CircuitBreaker) -> None:
        self._workers: dict[str, WorkerState] = {}
        self._new_circuit = new_circuit
        # Told the name of a worker whose circuit failures here opened (a cluster's brokers
        # open theirs too: `Broker`).
        self.circuit_opened: Callable[[str], None] = lambda name: None
        # Held across "change the store, then the registry" and "read the store, then sync",
        # so a sync from a list read just before a worker was added cannot drop it again.
        self.membership = asyncio.Lock()

    def __iter__(self) -> Iterator[WorkerState]:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, name: str) -> WorkerState | None:
        return self._workers.get(name)

    def sync(self, rows: Iterable[Worker]) -> None:
        """Adopt the store's worker list: new rows join, deleted ones leave. A worker that
        stays is updated in place (running jobs hold it), keeping its live health, load and
        the models its last health check reported."""
        seen: set[str] = set()
        for row in rows:
            seen.add(row.name)
            current = self._workers.get(row.name)
            if current is None:
                self.add(WorkerState.from_row(row))
                continue
            current.address, current.kind, current.realm = row.address, row.kind, row.realm
            current.capabilities = frozenset(row.capabilities)
            current.max_concurrency, current.api_key_env = row.max_concurrency, row.api_key_env
            current.specializations = {k: list(v) for k, v in row.specializations.items()}
            if row.models and tuple(row.models) != current.configured_models:
                current.models = current.configured_models = tuple(row.models)
        for name in set(self._workers) - seen:
            self.remove(name)

    def add(self, worker: WorkerState) -> None:
        worker.circuit = self._new_circuit()
        worker.circuit.on_open = lambda: self.circuit_opened(worker.name)
        self._workers[worker.name] = worker

    def remove(self, name: str) -> WorkerState | None:
        worker = self._workers.pop(name, None)
        if worker is not None:
            worker.removed = True
        return worker
