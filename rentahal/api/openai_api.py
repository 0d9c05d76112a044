"""The OpenAI-compatible API under `/v1` (SPEC §13): existing OpenAI SDKs and UIs use a realm
as their backend.

- `POST /v1/chat/completions` (streaming or not; text and image content parts),
- `GET /v1/models`, `GET /v1/models/{id}`,
- `POST /v1/images/generations`,
- `POST /v1/audio/transcriptions` (a multipart upload),
- `POST /v1/audio/speech`.

Every request is an ordinary query: it goes through `Scheduler.submit`, so the same queue,
fairness, routing, retries and accounting as the browser's apply, and it shows in the user's
history. Only API keys (`Authorization: Bearer …`) authenticate: a browser's session cookie is
not looked at, so no cross-site request can ride on it. Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, with OpenAI's status codes.

How OpenAI's requests map onto queries:

- `model` is the query's `model_name`: a model, a worker, a pool or realm (`$CHAT`); empty,
  `auto` or `default` means any worker of the type. The media endpoints also take OpenAI's
  stock names (`whisper-1`, `tts-1`, `dall-e-3`…) as "any worker" when no worker serves a model
  of that name, since many clients send them unasked.
- Workers take one prompt, not a conversation. A single user message is the prompt as it is;
  a longer conversation is rendered one turn per line, `System: …`, `User: …`,
  `Assistant: …` (`developer` counts as `System`), ending with the last message, which must be
  the user's. A user message with an image part makes the query a `vision` query with that
  image (the last image in the conversation: workers take one); images come as `data:` URLs
  only, since the broker fetches nothing from the network.
- `temperature`, `top_p`, `max_tokens` (or `max_completion_tokens`) and `seed` pass to the
  worker as the query's options; `n` must be 1; `stop` and `tools` are refused (no backend
  can honour them); other fields (`frequency_penalty`, `response_format`, `user`…) are
  ignored.
- `usage` counts words, not tokens: the broker does not know each worker's tokenizer.
- A non-streaming request waits for the query to finish, up to the time the scheduler itself
  may take (`queue_timeout` plus `max_attempts` × `query_timeout`); past that the query is
  cancelled and the answer is 504. A streaming request sends the answer's deltas as the worker
  produces them (a worker that does not stream gives one delta with the whole answer).
- Images answer `b64_json` (the default here: self-contained) or `url`, the broker's
  `/api/v1/queries/{id}/output`, which needs the same API key to fetch.
- Transcriptions take files up to 25 MB (OpenAI's limit) and answer `json`, `text` or
  `verbose_json`; `verbose_json` carries the text, the language asked for (or `unknown`) and
  the recording's duration, no segments. `prompt` and `temperature` are ignored.
- Speech answers WAV only (`response_format` omitted or `wav`; others are refused); `voice`
  is the worker's speaker (an OpenAI voice for OpenAI-compatible workers, a preset for Bark);
  `speed` and `instructions` are accepted and ignored.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.types import Receive, Scope, Send

from rentahal.api.deps import BrokerDep
from rentahal.api.rest import KEEP_ALIVE, is_final
from rentahal.api.security import client_address
from rentahal.auth import Principal
from rentahal.backends.base import IMAGE_BOUNDS
from rentahal.broker import Broker
from rentahal.bus.errors import ErrorCode, ProtocolError
from rentahal.bus.messages import QuerySpec
from rentahal.config import Settings
from rentahal.membership import holds_worker_token
from rentahal.store import Query, QueryState
from rentahal.store.queries import UNFINISHED_STATES

log = structlog.get_logger(__name__)

STARTED = int(time.time())  # `created` of every model: the broker keeps no such date
AUTO_MODELS = {"", "auto", "default"}
# OpenAI's own model names, which clients often send unasked: "any worker" when no worker
# serves a model of that name.
STOCK_MODELS: dict[str, frozenset[str]] = {
    "imagine": frozenset({"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"}),
    "stt": frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}),
    "tts": frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}),
}
TRANSCRIPTION_LIMIT = 25 * 1024 * 1024  # bytes, as OpenAI's
MAX_MESSAGES = 512
MAX_TEXT_CHARS = 400_000  # all the text parts of a request together
MAX_IMAGES = 4
DESCRIBE = "Describe this image in detail"  # the prompt of an image sent without text
ROLE_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


# --- errors ----------------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message
        self.type, self.code, self.param, self.headers = type, code, param, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        status.HTTP_404_NOT_FOUND,
        f"The model '{model}' does not exist or no live worker serves it",
        param="model",
        code="model_not_found",
    )


def refused(exc: ProtocolError, model_name: str) -> OpenAIError:
    """A query the scheduler (or the key's scopes) refused at submit."""
    code = exc.code
    if code in (ErrorCode.FORBIDDEN, ErrorCode.BANNED):
        return OpenAIError(
            status.HTTP_403_FORBIDDEN, exc.message, type="permission_error", code=code.value
        )
    if code == ErrorCode.NO_WORKER:
        if model_name:
            return model_not_found(model_name)
        return OpenAIError(
            status.HTTP_503_SERVICE_UNAVAILABLE, exc.message, type="server_error", code=code.value
        )
    if code in (
        ErrorCode.QUEUE_FULL,
        ErrorCode.USER_LIMIT,
        ErrorCode.RATE_LIMITED,
        ErrorCode.QUOTA_EXCEEDED,
    ):
        return OpenAIError(
            status.HTTP_429_TOO_MANY_REQUESTS,
            exc.message,
            type="rate_limit_error",
            code=code.value,
            headers=exc.http_headers(),
        )
    if code == ErrorCode.INSUFFICIENT_CREDIT:  # OpenAI's own answer to an empty balance
        return OpenAIError(
            status.HTTP_429_TOO_MANY_REQUESTS,
            exc.message,
            type="insufficient_quota",
            code=code.value,
        )
    if code == ErrorCode.INTERNAL:
        return OpenAIError(500, exc.message, type="server_error", code=code.value)
    return bad_request(exc.message, code=code.value)


# A finished query's error code → (status, OpenAI error type).
FAILURES: dict[str, tuple[int, str]] = {
    ErrorCode.INVALID: (status.HTTP_400_BAD_REQUEST, "invalid_request_error"),
    ErrorCode.WORKER_ERROR: (status.HTTP_502_BAD_GATEWAY, "server_error"),
    ErrorCode.TIMEOUT: (status.HTTP_504_GATEWAY_TIMEOUT, "server_error"),
    ErrorCode.EXPIRED: (status.HTTP_503_SERVICE_UNAVAILABLE, "server_error"),
    ErrorCode.NO_WORKER: (status.HTTP_503_SERVICE_UNAVAILABLE, "server_error"),
    ErrorCode.CANCELLED: (status.HTTP_409_CONFLICT, "invalid_request_error"),
}


def failed(query: Query) -> OpenAIError:
    """A query that ended without a result."""
    code = query.error_code or ErrorCode.INTERNAL.value
    status_code, kind = FAILURES.get(code, (500, "server_error"))
    return OpenAIError(status_code, query.error or f"query {query.state}", type=kind, code=code)


def from_http(exc: HTTPException) -> OpenAIError:
    detail = exc.detail
    message = detail.get("message") if isinstance(detail, dict) else detail
    code = detail.get("code") if isinstance(detail, dict) else None
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    if exc.status_code == status.HTTP_403_FORBIDDEN:
        kind = "permission_error"
    return OpenAIError(
        exc.status_code, str(message), type=kind, code=code, headers=dict(exc.headers or {})
    )


def field_path(loc: tuple[Any, ...]) -> str | None:
    """`messages.0.content.1.image_url.url` for pydantic's location of an error, without
    the names pydantic gives a union's members (`constrained-str`, `list[…]`, a tag)."""
    parts: list[str] = []
    items = [item for item in loc if item != "body"]
    index = 0
    while index < len(items):
        item = items[index]
        if isinstance(item, str) and ("[" in item or "-" in item or item == "str"):
            tagged = "tagged-union" in item
            if tagged and index + 2 < len(items) and isinstance(items[index + 1], int):
                parts.append(str(items[index + 1]))  # the list index; then skip the tag
                index += 3
                continue
            index += 1
            continue
        parts.append(str(item))
        index += 1
    return ".".join(parts) or None


def from_validation(exc: RequestValidationError) -> OpenAIError:
    """The most telling problem of a body that failed validation (of a union's members,
    the one that got furthest), with where it is as `param`."""
    errors = list(exc.errors())
    if not errors:
        return bad_request("invalid request")
    if any(error.get("type") == "json_invalid" for error in errors):
        return bad_request("the request body is not valid JSON", code="invalid_json")
    first = max(errors, key=lambda error: len(error.get("loc", ())))
    param = field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    return bad_request(f"{param}: {message}" if param else message, param=param)


class OpenAIRoute(APIRoute):
    """Routes whose every error (authentication, validation, refusals) is OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return from_validation(exc).response()
            except HTTPException as exc:
                return from_http(exc).response()
            except ProtocolError as exc:
                return refused(exc, "").response()

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


# --- who is calling ------------------------------------------------------------------------


async def api_key_principal(request: Request, broker: BrokerDep) -> Principal:
    """The owner of the API key in `Authorization: Bearer …`; cookies are not looked at."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    principal = None
    if scheme.lower() == "bearer" and key.strip():
        principal = await broker.auth.from_headers(request.headers, {})
    if principal is None:
        message = (
            "Incorrect API key provided"
            if key.strip()
            else "You didn't provide an API key: send it as Authorization: Bearer <key>"
        )
        raise OpenAIError(
            status.HTTP_401_UNAUTHORIZED,
            message,
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if principal.user.is_banned:
        raise OpenAIError(
            status.HTTP_403_FORBIDDEN,
            "You are banned from this service.",
            type="permission_error",
            code="banned",
        )
    if holds_worker_token(principal):
        raise OpenAIError(
            status.HTTP_403_FORBIDDEN,
            "a worker token only lets a machine join the realm as a worker",
            type="permission_error",
            code="insufficient_permissions",
        )
    return principal.seen_at(client_address(request))


KeyDep = Annotated[Principal, Depends(api_key_principal)]


# --- running queries -----------------------------------------------------------------------


def target(model: str | None) -> str:
    """The query's `model_name` for OpenAI's `model`."""
    name = (model or "").strip()
    return "" if name.lower() in AUTO_MODELS else name


def media_target(broker: Broker, query_type: str, model: str | None) -> str:
    name = target(model)
    if name in STOCK_MODELS.get(query_type, ()) and not broker.router.could_serve(query_type, name):
        return ""
    return name


async def submit(principal: Principal, broker: Broker, spec: QuerySpec) -> Query:
    """Queue the query as the browser's are queued. The caller may start watching the query's
    events right after this returns: nothing runs in between (no await follows the submit)."""
    try:
        query, _ = await broker.admission.submit(principal, spec)
    except ProtocolError as exc:
        raise refused(exc, spec.model_name) from None
    return query


def wait_bound(settings: Settings) -> float:
    """As long as the scheduler itself may take to end a query: a queue wait, then each
    attempt up to the query timeout."""
    return settings.queue_timeout + settings.max_attempts * settings.query_timeout + 30.0


async def finished(broker: Broker, query_id: str, *, with_media: bool = False) -> Query:
    """The query once done; an `OpenAIError` if it failed or took too long (then it is
    cancelled: its client has been told it failed)."""
    await broker.scheduler.wait_finished(query_id, wait_bound(broker.settings))
    query = await broker.store.queries.get(query_id, with_media=with_media)
    if query is None:
        raise OpenAIError(500, "the query vanished", type="server_error", code="internal")
    if query.state in UNFINISHED_STATES:
        await broker.scheduler.cancel(query_id, reason="the OpenAI API stopped waiting")
        raise OpenAIError(
            status.HTTP_504_GATEWAY_TIMEOUT,
            "the query did not finish in time",
            type="server_error",
            code="timeout",
        )
    if query.state != QueryState.DONE:
        raise failed(query)
    return query


def created_at(query: Query) -> int:
    return int(query.created_at.timestamp())


def words(text: str) -> int:
    return len(text.split())


# --- chat ----------------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(max_length=200_000)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ImageURL(BaseModel):
    url: Annotated[str, StringConstraints(max_length=16 * 1024 * 1024 + 64)]
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] | None = Field(default=None, max_length=64)
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> list[ImageURL]:
        if self.content is None or isinstance(self.content, str):
            return []
        return [part.image_url for part in self.content if isinstance(part, ImagePart)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, as much of it as a realm can honour."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(max_length=128)] = ""
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ChatRequest:
        if sum(len(m.text()) for m in self.messages) > MAX_TEXT_CHARS:
            raise ValueError(f"the messages' text is over {MAX_TEXT_CHARS} characters")
        if sum(len(m.images()) for m in self.messages) > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} images per request")
        return self


def render_prompt(messages: list[ChatMessage]) -> str:
    """One prompt for the conversation (workers take a single prompt): a lone user message
    as it is, otherwise one `Role: text` line per turn, ending with the user's last."""
    last = messages[-1]
    if len(messages) == 1:
        return last.text() or (DESCRIBE if last.images() else "")
    turns = []
    for message in messages:
        text = message.text() or (DESCRIBE if message is last and message.images() else "")
        if text:
            turns.append(f"{ROLE_LABELS[message.role]}: {text}")
    return "\n".join(turns)


def image_data(image: ImageURL, param: str) -> str:
    """The base64 of a `data:image/…;base64,…` URL; the broker fetches no remote images."""
    header, comma, data = image.url.partition(",")
    if not comma or not header.startswith("data:"):
        raise bad_request(
            "only data: URLs are accepted (data:image/...;base64,...): the broker fetches "
            "nothing from the network",
            param=param,
            code="invalid_image_url",
        )
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise bad_request(
            "an image URL must be data:image/<type>;base64,<data>",
            param=param,
            code="invalid_image_url",
        )
    return data


def chat_query(request: ChatRequest) -> QuerySpec:
    """The query a chat completion request makes; a refusal for what no worker honours."""
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    if request.stop:
        raise bad_request("stop sequences are not supported by this broker", param="stop")
    if request.tools or request.functions:
        raise bad_request("tools and functions are not supported by this broker", param="tools")
    if request.messages[-1].role != "user":
        raise bad_request("the last message must be the user's", param="messages")
    image = None
    for index, message in enumerate(request.messages):
        for part, content in enumerate(message.content or ()):
            if isinstance(content, ImagePart):
                where = f"messages.{index}.content.{part}.image_url.url"
                image = image_data(content.image_url, where)
    prompt = render_prompt(request.messages)
    options: dict[str, Any] = {"stream": bool(request.stream)}
    limit = request.max_completion_tokens or request.max_tokens
    for name, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("max_tokens", limit),
        ("seed", request.seed),
    ):
        if value is not None:
            options[name] = value
    try:
        return QuerySpec(
            prompt=prompt,
            query_type="vision" if image else "chat",
            model_name=target(request.model),
            image=image,
            options=options,
        )
    except ValueError as exc:  # a pydantic ValidationError: a bound of QuerySpec
        raise bad_request(str(exc).splitlines()[0], param="messages") from None


class Watched(StreamingResponse):
    """A streaming response that stops watching its query whatever ends it (the stream's
    end, a client gone, or a response never sent)."""

    def __init__(self, content: AsyncIterator[str], watch: AbstractContextManager[Any]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._watch.__exit__(None, None, None)


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def chat_stream(
    broker: Broker,
    query: Query,
    events: asyncio.Queue[str],
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
    while True:
        try:
            text = await asyncio.wait_for(events.get(), KEEP_ALIVE)
        except TimeoutError:
            # A final event lost to a full watch queue would leave us waiting: look.
            current = await broker.store.queries.get(query.id)
            if current is not None and current.state not in UNFINISHED_STATES:
                break
            if asyncio.get_running_loop().time() > deadline:
                await broker.scheduler.cancel(query.id, reason="the OpenAI API stopped waiting")
                break
            yield ": keep-alive\n\n"
            continue
        message = json.loads(text)
        if message.get("type") == "query_chunk" and message.get("delta"):
            sent.append(message["delta"])
            yield chunk({"content": message["delta"]})
        elif is_final(message):
            break
    done = await broker.store.queries.get(query.id)
    if done is None or done.state != QueryState.DONE:
        error = failed(done) if done is not None else OpenAIError(500, "the query vanished")
        yield sse(error.body())
        return
    result, streamed = done.result or "", "".join(sent)
    if result.startswith(streamed) and len(result) > len(streamed):
        # The rest, or all of it from a worker that does not stream.
        yield chunk({"content": result[len(streamed) :]})
    yield chunk({}, "stop")
    if include_usage:
        usage = usage_of(done)
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
        watch = broker.hub.watch(query.id)
        events = watch.__enter__()
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return Watched(chat_stream(broker, query, events, model, include_usage), watch)
    done = await finished(broker, query.id)
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


# --- models --------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = STARTED
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def model_cards(broker: Broker) -> list[ModelCard]:
    """Every model of every live worker, every such worker, every pool and realm: each a
    name a query may give as `model`."""
    cards: dict[str, ModelCard] = {}
    live = [w for w in broker.registry if w.alive]
    for worker in live:
        for model in worker.models:
            cards.setdefault(model, ModelCard(id=model, owned_by=worker.name))
    for worker in live:
        cards.setdefault(worker.name, ModelCard(id=worker.name, owned_by=worker.kind))
    for pool in sorted(broker.router.pools):
        cards.setdefault(pool, ModelCard(id=pool, owned_by="pool"))
    for realm in broker.router.realms:
        cards.setdefault(realm.name, ModelCard(id=realm.name, owned_by="realm"))
    return list(cards.values())


@router.get("/models")
async def list_models(_: KeyDep, broker: BrokerDep) -> ModelList:
    """What `model` may name: models, workers, pools and realms (`$CHAT`)."""
    return ModelList(data=model_cards(broker))


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, _: KeyDep, broker: BrokerDep) -> ModelCard:
    """One of `/v1/models` (ids may hold `/`, as `org/model`, and `$`, as `$CHAT`)."""
    for card in model_cards(broker):
        if card.id == model_id:
            return card
    raise model_not_found(model_id)


# --- images --------------------------------------------------------------------------------


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=32_000)]
    model: Annotated[str, StringConstraints(max_length=128)] | None = None
    n: int | None = Field(default=None, ge=1, le=10)
    size: Annotated[str, StringConstraints(max_length=16)] | None = None
    response_format: Literal["b64_json", "url"] | None = None
    quality: str | None = None  # ignored
    style: str | None = None  # ignored


def image_options(size: str | None) -> dict[str, Any]:
    """`WxH` as the query's width and height; `auto` or none: the worker's default."""
    if size is None or size == "auto":
        return {}
    width, x, height = size.partition("x")
    if not x or not width.isdigit() or not height.isdigit():
        raise bad_request("size must be WIDTHxHEIGHT, as 1024x1024, or auto", param="size")
    low, high = IMAGE_BOUNDS["width"]
    if not all(low <= int(side) <= high for side in (width, height)):
        raise bad_request(f"each side must be {low:g} to {high:g} pixels", param="size")
    return {"width": int(width), "height": int(height)}


@router.post("/images/generations")
async def generate_image(
    request: ImageRequest, principal: KeyDep, broker: BrokerDep, http: Request
) -> JSONResponse:
    """An `imagine` query: one picture, as base64 PNG (`b64_json`) or a broker URL (`url`)."""
    if request.n not in (None, 1):
        raise bad_request("only n=1 is supported", param="n")
    spec = QuerySpec(
        prompt=request.prompt,
        query_type="imagine",
        model_name=media_target(broker, "imagine", request.model),
        options=image_options(request.size),
    )
    query = await submit(principal, broker, spec)
    done = await finished(broker, query.id, with_media=True)
    if not done.output:
        raise OpenAIError(502, "the worker made no image", type="server_error", code="no_output")
    if request.response_format == "url":
        url = f"{str(http.base_url).rstrip('/')}/api/v1/queries/{done.id}/output"
        picture: dict[str, Any] = {"url": url, "revised_prompt": None}
    else:
        picture = {"b64_json": done.output, "revised_prompt": None}
    return JSONResponse({"created": created_at(done), "data": [picture]})


# --- audio ---------------------------------------------------------------------------------


def wav_seconds(data: str | None) -> float:
    """The length of the query's recording (a WAV after the broker's normalising)."""
    try:
        with wave.open(io.BytesIO(base64.b64decode(data or ""))) as recording:
            return round(recording.getnframes() / recording.getframerate(), 3)
    except (wave.Error, EOFError, ValueError, ZeroDivisionError):
        return 0.0


Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


@router.post("/audio/transcriptions", response_model=None)
async def transcribe(
    principal: KeyDep,
    broker: BrokerDep,
    file: Annotated[UploadFile, File(description="The recording (WAV, MP3, WebM, Ogg…).")],
    model: Annotated[str, Form(max_length=128)] = "",
    language: Annotated[Language | None, Form()] = None,
    prompt: Annotated[str | None, Form(max_length=200_000, description="ignored")] = None,
    response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
) -> Response:
    """An `stt` query: the recording's text."""
    data = await file.read(TRANSCRIPTION_LIMIT + 1)
    if len(data) > TRANSCRIPTION_LIMIT:
        raise OpenAIError(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"Maximum content size limit ({TRANSCRIPTION_LIMIT}) exceeded",
            param="file",
            code="file_too_large",
        )
    if not data:
        raise bad_request("the file is empty", param="file")
    spec = QuerySpec(
        query_type="stt",
        model_name=media_target(broker, "stt", model),
        options={"language": language} if language else {},
    )
    # Set apart from validation: QuerySpec bounds base64 to what a WebSocket frame carries,
    # and an upload may be larger (the broker normalises it to a 16 kHz WAV at submit).
    spec = spec.model_copy(update={"audio": base64.b64encode(data).decode()})
    del data
    query = await submit(principal, broker, spec)
    done = await finished(broker, query.id, with_media=response_format == "verbose_json")
    text = done.result or ""
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    if response_format == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": language or "unknown",
                "duration": wav_seconds(done.audio),
                "text": text,
            }
        )
    return JSONResponse({"text": text})


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, StringConstraints(max_length=128)] = ""
    input: Annotated[str, StringConstraints(min_length=1, max_length=200_000)]
    voice: Annotated[str, StringConstraints(max_length=64)] | None = None
    response_format: Literal["wav", "mp3", "opus", "aac", "flac", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)  # ignored
    instructions: str | None = None  # ignored


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}},
)
async def speak(request: SpeechRequest, principal: KeyDep, broker: BrokerDep) -> Response:
    """A `tts` query: the text spoken, as a WAV file."""
    if request.response_format not in (None, "wav"):
        raise bad_request(
            f"only wav audio is made here, not {request.response_format}: "
            "ask for response_format=wav",
            param="response_format",
            code="unsupported_format",
        )
    spec = QuerySpec(
        prompt=request.input,
        query_type="tts",
        model_name=media_target(broker, "tts", request.model),
        options={"speaker": request.voice} if request.voice else {},
    )
    query = await submit(principal, broker, spec)
    done = await finished(broker, query.id, with_media=True)
    if not done.output:
        raise OpenAIError(502, "the worker made no audio", type="server_error", code="no_output")
    return Response(base64.b64decode(done.output), media_type="audio/wav")


# --- anything else under /v1 ---------------------------------------------------------------


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown_url(path: str, request: Request) -> Response:
    raise OpenAIError(
        status.HTTP_404_NOT_FOUND,
        f"Unknown request URL: {request.method} /v1/{path}",
        code="unknown_url",
    )
