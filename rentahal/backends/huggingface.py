"""Hugging Face inference through `huggingface_hub.AsyncInferenceClient`, pointed at the
worker's own URL: a Text Generation Inference (TGI) server, an Inference Endpoint, or
anything that speaks their HTTP API. The client is given the URL as `base_url`, so it never
asks huggingface.co for anything (no model lookup, no provider routing); every request goes
to the worker. What it sends there (huggingface_hub 2.x, read from its source):

- chat: `POST {url}/v1/chat/completions {"model", "messages", "stream", temperature?, top_p?,
  max_tokens?, seed?}`, answered with OpenAI-style SSE `chat.completion.chunk` events and
  `data: [DONE]` (TGI's Messages API; streamed unless the query asks otherwise). Chosen over
  `text_generation` (`POST {url} {"inputs", "parameters", "stream"}`), because the Messages
  API applies the model's chat template, so an instruction-tuned model answers the prompt as
  a question instead of continuing it as text, and it is where the client sends chat for a
  base URL.
- vision: the image-to-text task, `POST {url}` with the broker's normalised JPEG as the raw
  body (`Content-Type: image/jpeg`), answered `[{"generated_text": ...}]`. The task takes no
  text, so the prompt is not sent: the answer is the model's description (caption) of the
  image. SPEC §5.1 names image-to-text for this protocol; a vision-language model served by
  TGI is better added as an `openai` worker, whose adapter sends the prompt and the image
  together.
- imagine: the text-to-image task, `POST {url} {"inputs": prompt, "parameters": {width,
  height, num_inference_steps, guidance_scale, seed, negative_prompt}}` with `Accept:
  image/png`, answered with the image's bytes; whatever format comes back is re-encoded to
  PNG, and an answer that is not an image is the worker's failure.
- health: `GET {url}/info` (TGI/TEI endpoint info; its `model_id` becomes the worker's model
  list) or, where there is no `/info`, `GET {url}/health`; the same requests as the client's
  `get_endpoint_info` and `health_check`, made on the broker's HTTP client.

The token is the worker's key (`Endpoint.key`: the key it joined with or the environment
variable named by `api_key_env`), sent as `Authorization: Bearer`. A worker without one gets
no token at all, never the broker host's own Hugging Face login. An HTTP error becomes a
`BackendError` with its status: 400/413/422 refuse the input; 401/403/429/5xx, including an
endpoint's 503 "model is currently loading", fail the worker so the job is retried elsewhere.

The client's own HTTP session obeys `HF_HUB_OFFLINE` by refusing every request, even to a
local server; the adapter hands it a plain session instead, shared by all requests, so an
offline broker still reaches its own endpoints (and connections are reused).
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image, UnidentifiedImageError

from rentahal.backends.base import (
    IMAGE_BOUNDS,
    NEGATIVE_PROMPT_LIMIT,
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
    generation_options,
)

if TYPE_CHECKING:
    import httpx2
    from huggingface_hub import AsyncInferenceClient

STEPS, GUIDANCE, SIZE = IMAGE_BOUNDS["steps"], IMAGE_BOUNDS["cfg_scale"], IMAGE_BOUNDS["width"]
MAX_SEED = IMAGE_BOUNDS["seed"][1]
# What TGI answers in a Messages API request's `model` when the worker names none.
ANY_MODEL = "tgi"


def _number(options: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = options.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def image_parameters(options: dict[str, Any]) -> dict[str, Any]:
    """`text_to_image` keyword arguments from the query's options, held to the SD web UI's
    bounds (steps 1–150, guidance 0–30, sides 64–2048 rounded down to a multiple of 8, seed
    0–2³²−1 with −1 meaning random). The SD web UI's names (`steps`, `cfg_scale`) and the
    diffusers ones (`num_inference_steps`, `guidance_scale`) are both understood; anything
    unset is left to the endpoint's defaults."""
    picked: dict[str, Any] = {}
    for side in ("width", "height"):
        if (size := _number(options, side)) is not None:
            picked[side] = int(_clamp(size, SIZE)) // 8 * 8
    if (steps := _number(options, "steps", "num_inference_steps")) is not None:
        picked["num_inference_steps"] = int(_clamp(steps, STEPS))
    if (guidance := _number(options, "cfg_scale", "guidance_scale", "guidance")) is not None:
        picked["guidance_scale"] = float(_clamp(guidance, GUIDANCE))
    if (seed := _number(options, "seed")) is not None and seed >= 0:
        picked["seed"] = int(min(seed, MAX_SEED))
    negative = options.get("negative_prompt")
    if isinstance(negative, str) and negative.strip():
        picked["negative_prompt"] = negative[:NEGATIVE_PROMPT_LIMIT]
    return picked


def png_base64(image: Image.Image) -> str:
    """The image as base64 PNG, whatever it was sent as; blocking, run it in a thread.
    `BackendError` when it does not decode."""
    try:
        image.load()
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
            image = image.convert("RGB")  # CMYK JPEGs and the like
        out = io.BytesIO()
        image.save(out, "PNG")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BackendError(f"worker's image does not decode: {exc}") from exc
    return base64.b64encode(out.getvalue()).decode()


async def _read_error_body(response: httpx2.Response) -> None:
    """Read an error answer's body, so the raised error carries the server's message even
    for a streamed request."""
    if response.status_code >= 400:
        await response.aread()


class HuggingFaceBackend(Backend):
    kind = "huggingface"
    query_types = frozenset({"chat", "vision", "imagine"})

    def __init__(self) -> None:
        self._session: httpx2.AsyncClient | None = None

    def result_type(self, query_type: str) -> str:
        return "image" if query_type == "imagine" else "text"

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        headers = self.auth_headers(endpoint)
        response = await client.get(f"{endpoint.url}/info", headers=headers, timeout=seconds)
        if response.status_code in (404, 405):  # not TGI/TEI: a plain liveness check
            response = await client.get(f"{endpoint.url}/health", headers=headers, timeout=seconds)
            return HealthReport(status=response.status_code)
        if response.status_code != 200:
            return HealthReport(status=response.status_code)
        try:
            info = response.json()
        except ValueError:
            info = None  # transformers-powered endpoints answer /info with an empty body
        model_id = info.get("model_id") if isinstance(info, dict) else None
        if isinstance(model_id, str) and model_id.strip():
            return HealthReport(status=200, models=(model_id.strip(),))
        return HealthReport(status=200)

    def _http(self) -> httpx2.AsyncClient:
        """The HTTP session every client uses: no redirects, no offline-mode hook, and no
        timeout of its own (the scheduler bounds every job)."""
        if self._session is None or self._session.is_closed:
            import httpx2

            self._session = httpx2.AsyncClient(
                timeout=None,
                follow_redirects=False,
                event_hooks={"response": [_read_error_body]},
            )
        return self._session

    def _client(self, endpoint: Endpoint, request: BackendRequest) -> AsyncInferenceClient:
        """A client for one request; closing it ends that request's streams (a cancelled
        job hangs up on the worker) but leaves the shared session open."""
        from huggingface_hub import AsyncInferenceClient

        token = endpoint.key or ""
        # Without a key of its own the client would send the host's HF login (HF_TOKEN or
        # the cached token) to whatever URL the worker has; a None header removes it.
        headers: dict[str, Any] = {} if token else {"authorization": None}
        if request.query_type == "vision":
            # Raw bytes go out untyped; endpoints pick the deserializer by Content-Type.
            headers["content-type"] = "image/jpeg"
        sdk = AsyncInferenceClient(base_url=endpoint.url, api_key=token or None, headers=headers)
        # The client's lazily made session (a private attribute of huggingface_hub 2.x):
        # preset, the client uses ours and never makes its own. Were it renamed, the client
        # would make one per request, as it does by default, and obey HF_HUB_OFFLINE.
        sdk._async_client = self._http()
        return sdk

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        import httpx2
        from huggingface_hub.errors import (
            HfHubHTTPError,
            OverloadedError,
            TextGenerationError,
            ValidationError,
        )

        try:
            async with self._client(endpoint, request) as sdk:
                if request.query_type == "imagine":
                    yield await self._imagine(sdk, request)
                elif request.query_type == "vision":
                    yield await self._describe(sdk, request)
                else:
                    async for delta in self._chat(sdk, request):
                        yield delta
        except HfHubHTTPError as exc:
            status = exc.response.status_code
            detail = exc.server_message or exc.response.text
            raise BackendError(
                f"worker answered HTTP {status}: {' '.join(str(detail).split())[:300]}",
                status=status,
            ) from exc
        except TextGenerationError as exc:  # an error event in the middle of a stream
            refused: int | None = 422 if isinstance(exc, ValidationError) else None
            refused = 429 if isinstance(exc, OverloadedError) else refused
            raise BackendError(f"worker failed mid-answer: {exc}", status=refused) from exc
        except httpx2.HTTPError as exc:
            raise BackendError(f"worker unreachable: {exc or type(exc).__name__}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise BackendError(f"worker's answer is malformed: {exc}") from exc
        except OSError as exc:  # an image that does not decode, a refused connection
            raise BackendError(f"worker error: {exc or type(exc).__name__}") from exc

    async def _chat(self, sdk: AsyncInferenceClient, request: BackendRequest) -> AsyncIterator[str]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": request.prompt}]
        model = request.model or ANY_MODEL
        options = generation_options(request.options)
        if not request.stream:
            answer = await sdk.chat_completion(messages, model=model, stream=False, **options)
            if not answer.choices:
                raise BackendError("worker answered with no choices")
            yield answer.choices[0].message.content or ""
            return
        stream = await sdk.chat_completion(messages, model=model, stream=True, **options)
        async for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is not None and delta.content:
                yield delta.content

    async def _describe(self, sdk: AsyncInferenceClient, request: BackendRequest) -> str:
        if not request.image:
            raise BackendError("a vision query without an image", status=400)
        answer = await sdk.image_to_text(base64.b64decode(request.image))
        text = answer.generated_text
        if not isinstance(text, str):
            raise BackendError("worker's answer has no generated_text")
        return text

    async def _imagine(self, sdk: AsyncInferenceClient, request: BackendRequest) -> str:
        try:
            image = await sdk.text_to_image(request.prompt, **image_parameters(request.options))
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise BackendError("worker's answer is not an image") from exc
        return await asyncio.to_thread(png_base64, image)
