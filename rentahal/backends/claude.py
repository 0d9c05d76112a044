"""Anthropic's Messages API (Claude), through the official `anthropic` SDK: `POST
/v1/messages` (SSE when streaming), and `GET /v1/models` for health and models.

The worker's address is the API's base URL (`https://api.anthropic.com`, or any server
speaking the same API); its key comes from the environment variable the sysop named
(`api_key_env`). It goes out as `x-api-key`, the header the API reference documents, that
the API prefers when both come and that Anthropic-compatible proxies read; the SDK (2.x)
would send it as `Authorization: Bearer`, which is left out. The SDK's own retries are off:
the scheduler decides about retries. The SDK is imported on first use, as importing it
takes most of a second.

Sampling options are not passed on: API version 2026-10-21, which the SDK speaks, refuses
temperature, top_p and top_k (400), and has no seed. `max_tokens` is (default 1024).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from rentahal.backends.base import (
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
    generation_options,
)

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import MessageParam

DEFAULT_MAX_TOKENS = 1024
# The API version the health probe asks for; the SDK sends its own on messages.
PROBE_API_VERSION = "2023-06-01"
# Per request, so the SDK does not refuse large non-streamed `max_tokens` up front; the
# scheduler's query timeout is the real bound.
REQUEST_TIMEOUT = 600.0
# Statuses the API documents for the error types it may also send inside a 200 stream.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_DATED = re.compile(r"^(?P<alias>.+)-\d{8}$")


def _base_url(endpoint: Endpoint) -> str:
    """The API root: the worker's URL (a trailing `/v1` is the SDK's to add)."""
    return endpoint.url.removesuffix("/v1")


def _api_key(endpoint: Endpoint) -> str | None:
    return endpoint.key or None


def user_message(request: BackendRequest) -> MessageParam:
    """The prompt; with an image, the image block (a base64 JPEG) before the text block,
    as Anthropic recommends for vision prompts."""
    if request.image is None:
        return {"role": "user", "content": request.prompt}
    return {
        "role": "user",
        "content": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/jpeg", "data": request.image},
            },
            {"type": "text", "text": request.prompt},
        ],
    }


def message_options(options: dict[str, Any]) -> dict[str, Any]:
    """What the Messages API takes of the user's options: `max_tokens` (required; 1024 when
    not given). API version 2026-10-21, which the SDK sends, refuses temperature, top_p and
    top_k with a 400 (the SDK no longer has them) and there is no seed, so those are dropped
    rather than failing every query that sets them."""
    picked = generation_options(options)
    return {"max_tokens": picked.get("max_tokens", DEFAULT_MAX_TOKENS)}


def model_names(ids: Iterable[str], configured: Iterable[str]) -> tuple[str, ...]:
    """The models a worker serves, from the Models API's ids. The API lists dated ids
    (`claude-sonnet-4-5-20250929`) but answers to their aliases (`claude-sonnet-4-5`) too, so
    both count; the sysop's configured models that are there come first, in their order, so
    the worker's default model stays the one the sysop put first."""
    available: list[str] = []
    for model_id in ids:
        available.append(model_id)
        if (dated := _DATED.match(model_id)) is not None:
            available.append(dated["alias"])
    present = set(available)
    first = [name for name in configured if name in present]
    return tuple(dict.fromkeys([*first, *available]))


class ClaudeBackend(Backend):
    kind = "claude"
    query_types = frozenset({"chat", "vision"})

    def __init__(self) -> None:
        # SDK clients are cheap to keep and not free to build: one per (base URL, key).
        self._clients: dict[tuple[str, str | None], anthropic.AsyncAnthropic] = {}

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        headers = {"anthropic-version": PROBE_API_VERSION}
        if key := _api_key(endpoint):
            headers["x-api-key"] = key
        response = await client.get(
            f"{_base_url(endpoint)}/v1/models",
            params={"limit": 1000},
            headers=headers,
            timeout=seconds,
        )
        if response.status_code != 200:
            return HealthReport(status=response.status_code)
        try:
            ids = [str(entry["id"]) for entry in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return HealthReport(status=502)  # a 200 from something that is not the API
        return HealthReport(status=200, models=model_names(ids, endpoint.models))

    def _sdk(self, endpoint: Endpoint) -> anthropic.AsyncAnthropic:
        key = _api_key(endpoint)
        base = _base_url(endpoint)
        sdk = self._clients.get((base, key))
        if sdk is None:
            import anthropic

            # The key as `x-api-key` only. Without a configured key the SDK is still given
            # an explicit (empty) one, so it never picks up credentials of its own from the
            # broker's environment or profile files.
            headers: dict[str, Any] = {"Authorization": anthropic.omit}
            if key:
                headers["x-api-key"] = key
            sdk = anthropic.AsyncAnthropic(
                api_key=key or "",
                base_url=base,
                max_retries=0,
                default_headers=headers,
            )
            self._clients[(base, key)] = sdk
        return sdk

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        if not request.model:
            raise BackendError("no model named and the worker lists none")
        import anthropic
        import httpx2

        sdk = self._sdk(endpoint)
        messages: list[MessageParam] = [user_message(request)]
        options = message_options(request.options)
        try:
            if not request.stream:
                message = await sdk.messages.create(
                    model=request.model,
                    messages=messages,
                    stream=False,
                    timeout=REQUEST_TIMEOUT,
                    **options,
                )
                yield "".join(block.text for block in message.content if block.type == "text")
                return
            stream = await sdk.messages.create(
                model=request.model,
                messages=messages,
                stream=True,
                timeout=REQUEST_TIMEOUT,
                **options,
            )
            finished = False
            async with stream:
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            yield event.delta.text
                    elif event.type == "message_stop":
                        finished = True
            if not finished:
                raise BackendError("worker closed the stream before the message was complete")
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from exc
        except anthropic.APIConnectionError as exc:
            raise BackendError(f"worker unreachable: {exc.__cause__ or exc}") from exc
        except anthropic.AnthropicError as exc:
            raise BackendError(f"worker error: {exc}") from exc
        except httpx2.HTTPError as exc:  # the connection broke while the answer streamed
            raise BackendError(f"worker connection lost: {exc or type(exc).__name__}") from exc


def _status_error(exc: anthropic.APIStatusError) -> BackendError:
    """An error answer, or an `error` event inside a stream that had begun with 200: then
    the status is the one the API documents for the error's type."""
    status = exc.status_code
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "error")
    detail = str(error.get("message") or exc.message)[:300]
    if status == 200:
        status = ERROR_STATUS.get(kind, 500)
        return BackendError(f"worker sent {kind} mid-stream: {detail}", status=status)
    return BackendError(f"worker answered HTTP {status} ({kind}): {detail}", status=status)
