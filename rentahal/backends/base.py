"""What every backend adapter offers the scheduler: a health probe and a generation stream."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from rentahal.backends.transport import Reply
from rentahal.core.options import OPTION_BOUNDS

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
class Endpoint:
    """What an adapter needs to reach one worker, and nothing of the broker's live record
    of it (health, load, circuit): the registry builds one for each call
    (`WorkerState.endpoint`), the worker's proxy one for its upstream."""

    name: str
    kind: str  # the protocol, a key of `BACKENDS`
    url: str  # the base URL, scheme included and no trailing slash
    models: tuple[str, ...] = ()  # the worker's models, its default first
    # The secret the worker wants as `Authorization` (the adapter decides the scheme); kept
    # out of the repr so that logging an endpoint never logs it.
    key: str | None = field(default=None, repr=False)


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
    # Names this attempt's work (the job and its step) so that a worker that can tell
    # answers a repeat from its first run instead of running it again.
    job_id: str = ""
    # The installations the query has come through, this one last (a peer installation
    # never sends it back to one of them: `rentahal.federation`).
    hops: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServedBy:
    """Yielded last by a backend that knows which of its own workers answered (another
    installation: `rentahal.backends.federation`); the query shows `<worker>/<this name>`."""

    worker: str


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


def stream_object(text: str, what: str = "line") -> dict[str, Any]:
    """One line (NDJSON) or event (SSE) of a worker's stream, as the JSON object it must be."""
    try:
        part = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendError(f"worker sent a {what} that is not JSON") from exc
    if not isinstance(part, dict):
        raise BackendError(f"worker sent a {what} that is not a JSON object")
    return part


def error_message(body: object) -> str:
    """The message of `{"error": {"message": …}}` (OpenAI's and a worker node's shape) or of
    `{"error": "…"}` (Ollama's), else the body as it is; at most 300 characters."""
    failure = body.get("error") if isinstance(body, dict) else None
    message = failure.get("message") if isinstance(failure, dict) else failure
    return str(message if message is not None else body)[:300]


async def ndjson_objects(response: Reply) -> AsyncIterator[dict[str, Any]]:
    """The objects of an NDJSON answer up to its `"done": true` one, with the rest read to
    the end: a response left unread cannot go back to the pool, and the next job would open a
    new connection. `BackendError` when the stream ends before it is done."""
    done = False
    async for line in response.aiter_lines():
        if done or not line.strip():
            continue
        part = stream_object(line)
        yield part
        done = part.get("done") is True
    if not done:
        raise BackendError("worker closed the stream before it was done")


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
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        """One health check; raises `httpx.HTTPError` when the worker cannot be reached."""

    @abstractmethod
    def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str | ServedBy]:
        """Yield the answer as text deltas (one delta when the backend does not stream), and
        last, if the backend knows it, who served it (`ServedBy`)."""

    async def probe_model_list(
        self,
        client: httpx.AsyncClient,
        endpoint: Endpoint,
        url: str,
        seconds: float,
        names: Callable[[Any], Iterable[str]],
    ) -> HealthReport:
        """A health check that GETs the server's model list: healthy means 200 *and* a list
        in the protocol's shape (a 200 from something else is reported as 502)."""
        response = await client.get(url, headers=self.auth_headers(endpoint), timeout=seconds)
        if response.status_code != 200:
            return HealthReport(status=response.status_code)
        try:
            return HealthReport(status=200, models=tuple(names(response.json())))
        except (ValueError, KeyError, TypeError):
            return HealthReport(status=502)

    @staticmethod
    def auth_headers(endpoint: Endpoint) -> dict[str, str]:
        """`Authorization: Bearer` with the endpoint's key, if it has one."""
        return {"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {}

    @staticmethod
    def raise_for_status(response: Reply, body: bytes | None = None) -> None:
        if response.status_code == 200:
            return
        detail = (body or b"")[:300].decode("utf-8", "replace").strip()
        raise BackendError(
            f"worker answered HTTP {response.status_code}" + (f": {detail}" if detail else ""),
            status=response.status_code,
        )
