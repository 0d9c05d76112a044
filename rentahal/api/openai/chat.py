"""`POST /v1/chat/completions`: a chat completion, whole or streamed as server-sent
`chat.completion.chunk` events from the query's own events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from rentahal.api.deps import BrokerDep
from rentahal.api.openai.auth import KeyDep
from rentahal.api.openai.chat_request import ChatRequest, chat_query
from rentahal.api.openai.errors import OpenAIRoute, failed
from rentahal.api.openai.running import created_at, finished, submit, wait_bound, words
from rentahal.api.streaming import KEEP_ALIVE, KEEP_ALIVE_COMMENT
from rentahal.broker import Broker
from rentahal.bus.events import QueryChunk
from rentahal.queries import QueryEvents
from rentahal.store import Query, QueryState

router = APIRouter(route_class=OpenAIRoute)


class Watched(StreamingResponse):
    """A streaming response that stops watching its query whatever ends it (the stream's
    end, a client gone, or a response never sent)."""

    def __init__(self, content: AsyncIterator[str], events: QueryEvents) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._events.close()


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def chat_stream(
    broker: Broker,
    query: Query,
    events: QueryEvents,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """`chat.completion.chunk` events from the query's own events, then `[DONE]`."""
    base = {
        "id": f"chatcmpl-{query.id}",
        "object": "chat.completion.chunk",
        "created": created_at(query),
        "model": model,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(base | {"choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    sent: list[str] = []
    deadline = asyncio.get_running_loop().time() + wait_bound(broker.settings)
    async for event in events:
        if event is None:  # quiet for a while
            if asyncio.get_running_loop().time() > deadline:
                await broker.queries.cancel(query.id, reason="the OpenAI API stopped waiting")
                break
            yield KEEP_ALIVE_COMMENT
        elif isinstance(event, QueryChunk) and event.delta:
            sent.append(event.delta)
            yield chunk({"content": event.delta})
    # `query` is the scheduler's own object, updated in place: see `finished`.
    if query.state != QueryState.DONE:
        yield sse(failed(query).body())
        return
    result, streamed = query.result or "", "".join(sent)
    if result.startswith(streamed) and len(result) > len(streamed):
        # The rest, or all of it from a worker that does not stream.
        yield chunk({"content": result[len(streamed) :]})
    yield chunk({}, "stop")
    if include_usage:
        usage = usage_of(query)
        yield sse(base | {"choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def usage_of(query: Query) -> dict[str, int]:
    """Rough counts, in words: the broker does not know the workers' tokenizers."""
    prompt, completion = words(query.prompt), words(query.result or "")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@router.post(
    "/chat/completions",
    responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}},
)
async def chat_completions(request: ChatRequest, principal: KeyDep, broker: BrokerDep) -> Response:
    """A chat completion (`stream: true`: as server-sent `chat.completion.chunk` events)."""
    spec = chat_query(request)
    model = request.model or "auto"
    query = await submit(principal, broker, spec)
    if request.stream:
        # Watch before anything else runs: no event of the query can be missed.
        events = broker.queries.stream(query.id, idle=KEEP_ALIVE)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return Watched(chat_stream(broker, query, events, model, include_usage), events)
    done = await finished(broker, query)
    return JSONResponse(
        {
            "id": f"chatcmpl-{done.id}",
            "object": "chat.completion",
            "created": created_at(done),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.result or "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage_of(done),
        }
    )
