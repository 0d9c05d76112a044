"""The OpenAI-compatible API under `/v1` (SPEC §13): existing OpenAI SDKs and UIs use a realm
as their backend.

- `POST /v1/chat/completions` (streaming or not; text and image content parts),
- `GET /v1/models`, `GET /v1/models/{id}`,
- `POST /v1/images/generations`,
- `POST /v1/audio/transcriptions` (a multipart upload),
- `POST /v1/audio/speech`.

Every request is an ordinary query: it goes through the queries service (`rentahal.queries`:
admission, then the scheduler), so the same queue, fairness, routing, retries and accounting
as the browser's apply, and it shows in the user's history. Only API keys (`Authorization:
Bearer …`) authenticate: a browser's session cookie is not looked at, so no cross-site
request can ride on it. Every error under `/v1` uses OpenAI's shape, `{"error": {"message",
"type", "param", "code"}}`, with OpenAI's status codes: the routes' own, and those raised
before any route runs (`errors.install_error_handlers`).

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
  worker as the query's options, held to the bounds the bus and REST hold them to
  (`messages.QueryOptions`: `max_tokens` 1 to 32768, finite `temperature` 0 to 2…); text
  with a NUL or a lone surrogate is refused, as everywhere (`messages.text_fault`); `n` must
  be 1; `stop` and `tools` are refused (no backend can honour them); other fields
  (`frequency_penalty`, `response_format`, `user`…) are ignored.
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

One module per resource (`chat`, `models`, `images`, `audio`), each with its own router, put
together here under `/v1`; `errors` (OpenAI's error shape), `auth` (the API key) and
`running` (a request as a query) are what they share.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from rentahal.api.openai import audio, chat, images, models
from rentahal.api.openai.errors import OpenAIError, OpenAIRoute

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
for resource in (chat, models, images, audio):
    router.include_router(resource.router)


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
