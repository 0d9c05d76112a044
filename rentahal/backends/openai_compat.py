"""Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, LocalAI, OpenAI itself):
`POST /v1/chat/completions` (SSE when streaming), `GET /v1/models`. Talks through the official
`openai` SDK, on the broker's shared HTTP client, with the SDK's own retries off (the
scheduler decides about retries). The SDK is imported on first use: it takes most of a
second to import, which every CLI call and broker start would otherwise pay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from rentahal.backends.base import (
    Backend,
    BackendError,
    BackendRequest,
    HealthReport,
    generation_options,
)
from rentahal.routing.registry import WorkerState

if TYPE_CHECKING:
    import openai
    from openai import AsyncStream
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam


def _api_root(worker: WorkerState) -> str:
    url = worker.url
    return url if url.endswith("/v1") else f"{url}/v1"


def user_message(request: BackendRequest) -> ChatCompletionMessageParam:
    """The prompt, with the image as an image content part (a JPEG data URL) if there is one."""
    if request.image is None:
        return {"role": "user", "content": request.prompt}
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": request.prompt},
            {
                "type": "image_url",
                "image_url": {"url": f"data:image/jpeg;base64,{request.image}"},
            },
        ],
    }


class OpenAIBackend(Backend):
    kind = "openai"
    query_types = frozenset({"chat", "vision"})

    def __init__(self) -> None:
        # SDK clients are cheap to keep and not free to build: one per (API root, key).
        self._clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}

    async def probe(
        self, client: httpx.AsyncClient, worker: WorkerState, seconds: float
    ) -> HealthReport:
        return await self.probe_model_list(
            client,
            worker,
            f"{_api_root(worker)}/models",
            seconds,
            lambda body: (m["id"] for m in body["data"]),
        )

    def _sdk(self, worker: WorkerState) -> openai.AsyncOpenAI:
        key = self.auth_headers(worker).get("Authorization", "Bearer none").removeprefix("Bearer ")
        root = _api_root(worker)
        sdk = self._clients.get((root, key))
        if sdk is None:
            import openai

            # The SDK brings its own HTTP stack (httpx2), so it keeps its own pool per worker.
            sdk = openai.AsyncOpenAI(api_key=key, base_url=root, max_retries=0)
            self._clients[(root, key)] = sdk
        return sdk

    async def generate(
        self, client: httpx.AsyncClient, worker: WorkerState, request: BackendRequest
    ) -> AsyncIterator[str]:
        if not request.model:
            raise BackendError("no model named and the worker lists none")
        import openai

        sdk = self._sdk(worker)
        messages: list[ChatCompletionMessageParam] = [user_message(request)]
        options = generation_options(request.options)
        try:
            if not request.stream:
                completion: ChatCompletion = await sdk.chat.completions.create(
                    model=request.model, messages=messages, stream=False, **options
                )
                if not completion.choices:
                    raise BackendError("worker answered with no choices")
                yield completion.choices[0].message.content or ""
                return
            stream: AsyncStream[ChatCompletionChunk] = await sdk.chat.completions.create(
                model=request.model, messages=messages, stream=True, **options
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices and (delta := chunk.choices[0].delta.content):
                        yield delta
        except openai.APIStatusError as exc:
            raise BackendError(
                f"worker answered HTTP {exc.status_code}: {str(exc.message)[:300]}",
                status=exc.status_code,
            ) from exc
        except openai.APIConnectionError as exc:
            raise BackendError(f"worker unreachable: {exc.__cause__ or exc}") from exc
        except openai.OpenAIError as exc:
            raise BackendError(f"worker error: {exc}") from exc
