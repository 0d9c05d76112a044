"""What every streaming adapter owes the broker's pooled client, against each protocol's stub
(a real process): a streamed answer is read to its very end, past its last piece, so that its
connection goes back to the pool. One read only up to the `done` line (or `[DONE]`) cannot,
and every job would open a new connection to its worker."""

from __future__ import annotations

import httpx
import pytest

from rentahal.backends import BACKENDS
from rentahal.backends.base import BackendRequest, Endpoint
from rentahal.testing.process import StubServer

PROMPT = "what is the weather today"


@pytest.mark.parametrize(
    ("kind", "protocol", "model"),
    [
        ("ollama", "ollama", "llama3"),
        ("openai", "openai", "gpt-4o-mini"),
        ("rentahal", "rentahal", ""),
    ],
)
async def test_streamed_answers_leave_their_connection_to_the_next_job(
    kind: str, protocol: str, model: str
) -> None:
    connects: list[str] = []

    async def trace(event: str, _info: dict[str, object]) -> None:
        if event == "connection.connect_tcp.started":
            connects.append(event)

    async def traced(request: httpx.Request) -> None:
        request.extensions["trace"] = trace

    models = [model] if model else None
    async with (
        StubServer(protocol, models=models, chunk_delay=0.01) as stub,
        httpx.AsyncClient(trust_env=False, event_hooks={"request": [traced]}) as http,
    ):
        endpoint = Endpoint(name="w1", kind=kind, url=stub.url, models=tuple(models or ()))
        request = BackendRequest(prompt=PROMPT, query_type="chat", model=model, stream=True)
        for _ in range(3):
            pieces = [p async for p in BACKENDS[kind].generate(http, endpoint, request)]
            assert len(pieces) > 1 and PROMPT in "".join(pieces)
    assert len(connects) == 1
