"""Behaviour and request log shared by every stub protocol, and the ``/_stub`` control API.

Tests drive a stub running in another process, so everything they need to steer (latency,
failures, replies) or to observe (what the broker sent, whether it hung up) lives here and
is reachable over HTTP under ``/_stub``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Scope

CONTROL_PREFIX = "/_stub"
DEFAULT_MODELS = ("stub-model",)


@dataclass
class Behaviour:
    """How the stub answers; every field can be changed at runtime via ``POST /_stub/config``."""

    latency: float = 0.0
    """Seconds before the answer starts (models 'thinking' time)."""
    chunk_delay: float = 0.0
    """Seconds between streamed chunks."""
    fail_status: int | None = None
    """HTTP status returned by inference calls instead of an answer; ``None`` answers."""
    fail_count: int | None = None
    """Fail only this many further inference calls, then recover; ``None`` fails forever."""
    health_status: int = 200
    """Status of the protocol's liveness/listing routes."""
    health_delay: float = 0.0
    """Seconds before the liveness/listing routes answer, to provoke probe timeouts."""
    reply: str | None = None
    """Fixed reply text; ``None`` echoes the prompt so tests can tell answers apart."""
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    """Model names the server claims to have."""
    crash_after_chunks: int | None = None
    """Drop the connection after this many streamed chunks, like a worker dying mid-answer."""
    slots: int | None = None
    """Capacity a RENT A HAL worker reports in ``/health`` (``load.slots``); ``None`` omits it."""
    streams: bool = True
    """Whether a RENT A HAL worker streams when asked (``"stream": true``); ``False`` answers
    whole, as the seed's worker and older nodes do."""
    error_after_chunks: int | None = None
    """A RENT A HAL worker's stream ends with an error line after this many chunks, like its
    engine failing mid-answer (the connection stays up, unlike ``crash_after_chunks``)."""

    def patched(self, changes: Mapping[str, Any]) -> Behaviour:
        """Return a copy with ``changes`` applied, rejecting names that are not behaviour.

        Unknown keys are errors rather than ignored so a typo in a test cannot silently
        leave the stub in its default behaviour.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown behaviour: {', '.join(unknown)}")
        for name, value in changes.items():
            _check_value(name, value)
        updated = replace(self, **changes)
        updated.models = list(updated.models)
        return updated


@dataclass
class StubState:
    """Mutable state of one stub process: its behaviour, request log and traffic counters."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    api_key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    completed: int = 0
    disconnected: int = 0
    inference_in_flight: int = 0
    """Inference calls being answered now (``in_flight`` also counts health probes)."""
    peak_in_flight: int = 0
    """Most inference calls answered at once since launch or the last reset."""
    initial: Behaviour = field(init=False)

    def __post_init__(self) -> None:
        self.initial = replace(self.behaviour, models=list(self.behaviour.models))

    def record(self, scope: Scope, body: bytes) -> dict[str, Any]:
        """Log an incoming request so tests can assert exactly what the broker sent.

        Returns the log entry; its ``outcome`` is ``None`` while the request is being
        answered, then ``"completed"`` or ``"disconnected"`` (see :meth:`finished`).
        """
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            # Decoded query parameters; a name given twice keeps its last value, as Starlette's
            # `request.query_params[name]` (and so every stub route) reads it.
            "query": dict(
                parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            ),
            "headers": headers,
            # The caller's address and port: one per connection, so a test sees keep-alive.
            "peer": "{}:{}".format(*scope["client"]) if scope.get("client") else None,
            "json": _parse_json(body),
            "time": time.time(),
            "outcome": None,
        }
        self.requests.append(entry)
        return entry

    def started(self, *, inference: bool) -> None:
        """A logged request is being answered; inference calls also count toward the peak."""
        self.in_flight += 1
        if inference:
            self.inference_in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.inference_in_flight)

    def answering(self, *, inference: bool) -> None:
        """A request's last response bytes are about to go: an inference call stops counting
        toward the peak now (`inference` False for `finished` then)."""
        if inference:
            self.inference_in_flight -= 1

    def finished(
        self, entry: dict[str, Any], *, inference: bool, completed: bool, disconnected: bool
    ) -> None:
        """A logged request ended: count how, and note it in its log entry (`inference`: it
        still counts as an inference call in flight)."""
        self.in_flight -= 1
        if inference:
            self.inference_in_flight -= 1
        if completed:
            self.completed += 1
            entry["outcome"] = "completed"
        elif disconnected:
            self.disconnected += 1
            entry["outcome"] = "disconnected"

    def take_failure(self) -> int | None:
        """Return the status an inference call must fail with now, or ``None`` to answer.

        Counts down ``fail_count`` so a test can make a worker fail N times and then
        watch the broker recover.
        """
        behaviour = self.behaviour
        if behaviour.fail_status is None:
            return None
        status = behaviour.fail_status
        if behaviour.fail_count is not None:
            behaviour.fail_count -= 1
            if behaviour.fail_count <= 0:
                behaviour.fail_status = behaviour.fail_count = None
        return status

    def reply_to(self, prompt: str) -> str:
        """Answer text: the configured reply, or a deterministic echo of the prompt."""
        return self.behaviour.reply if self.behaviour.reply is not None else f"echo: {prompt}"

    def reset(self) -> None:
        """Return to the launch behaviour with an empty log, so one process can serve many tests."""
        self.behaviour = replace(self.initial, models=list(self.initial.models))
        self.requests.clear()
        self.completed = self.disconnected = 0
        self.peak_in_flight = self.inference_in_flight

    def stats(self, *, peak: bool = False) -> dict[str, int]:
        """The traffic counters; with ``peak``, also ``peak_in_flight``: the most inference
        calls (the protocol's POSTs, not its health probes or listings) answered at once."""
        counters = {
            "in_flight": self.in_flight,
            "completed": self.completed,
            "disconnected": self.disconnected,
        }
        if peak:
            counters["peak_in_flight"] = self.peak_in_flight
        return counters


_NUMBER = (int, float)
_OPTIONAL_INT = (int, type(None))
_ACCEPTED_TYPES: dict[str, tuple[type, ...]] = {
    "latency": _NUMBER,
    "chunk_delay": _NUMBER,
    "health_delay": _NUMBER,
    "fail_status": _OPTIONAL_INT,
    "fail_count": _OPTIONAL_INT,
    "crash_after_chunks": _OPTIONAL_INT,
    "error_after_chunks": _OPTIONAL_INT,
    "streams": (bool,),
    "slots": _OPTIONAL_INT,
    "health_status": (int,),
    "reply": (str, type(None)),
    "models": (list,),
}


def _check_value(name: str, value: object) -> None:
    """Reject a badly typed setting at config time instead of as a 500 on the next request."""
    accepted = _ACCEPTED_TYPES[name]
    valid = isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool))
    if isinstance(value, list):
        valid = valid and all(isinstance(item, str) for item in value)
    if not valid:
        raise ValueError(f"invalid value for {name}: {value!r}")


def split_chunks(text: str) -> list[str]:
    """Split a reply into word-sized stream chunks whose concatenation is exactly ``text``.

    Whitespace stays attached to the following word, the way tokenizers emit it.
    """
    return [piece for piece in re.split(r"(?<=\S)(?=\s)", text) if piece]


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def control_routes(state: StubState) -> Mount:
    """The ``/_stub`` API through which a test process steers and inspects the stub."""

    async def list_requests(request: Request) -> Response:
        return JSONResponse(state.requests)

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        return Response(status_code=204)

    async def get_config(request: Request) -> Response:
        return JSONResponse(asdict(state.behaviour))

    async def patch_config(request: Request) -> Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("config patch must be a JSON object")
            state.behaviour = state.behaviour.patched(changes)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(state.behaviour))

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse(asdict(state.behaviour))

    async def stats(request: Request) -> Response:
        # `?peak=1` adds peak_in_flight; the plain form keeps its three counters.
        peak = request.query_params.get("peak", "").lower() in {"1", "true", "yes"}
        return JSONResponse(state.stats(peak=peak))

    return Mount(
        CONTROL_PREFIX,
        routes=[
            Route("/requests", list_requests, methods=["GET"]),
            Route("/requests", clear_requests, methods=["DELETE"]),
            Route("/config", get_config, methods=["GET"]),
            Route("/config", patch_config, methods=["POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ],
    )
