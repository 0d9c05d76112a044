"""Stable Diffusion web UI (AUTOMATIC1111 and its API-compatible forks, `--api`):
`POST /sdapi/v1/txt2img` → `{images: [base64], parameters, info}`; health from
`GET /sdapi/v1/options` (or `GET /internal/ping`); models from `GET /sdapi/v1/sd-models`.

The request is the seed's: `{prompt, steps 50, sampler_name "Euler a", cfg_scale 7, width 512,
height 512, seed -1}`. A query's `options` may change these within bounds (`IMAGE_BOUNDS`):
numbers out of range are clamped to it (width and height then rounded down to a multiple of
8), a negative prompt over 2000 characters is cut to 2000, and anything else (a sampler the
web UI does not have, a value of the wrong type, an unknown option) is dropped.

A model the user named (one of the worker's checkpoints) goes as
`override_settings: {sd_model_checkpoint}` with `override_settings_restore_afterwards: false`,
so the web UI keeps that checkpoint loaded instead of reloading the previous one after every
image. With no model named, nothing is overridden and the checkpoint loaded now is used.

The web UI's own `--api-auth user:password` is HTTP Basic: a worker key of the form
`user:password` is sent that way; any other key goes as a Bearer token (a proxy in front).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from rentahal.backends.base import (
    IMAGE_BOUNDS,
    NEGATIVE_PROMPT_LIMIT,
    Backend,
    BackendError,
    BackendRequest,
    Endpoint,
    HealthReport,
)
from rentahal.media import BadMedia
from rentahal.media.images import generated_image

# The seed's txt2img request, before the prompt and the user's options.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "steps": 50,
    "sampler_name": "Euler a",
    "cfg_scale": 7,
    "width": 512,
    "height": 512,
    "seed": -1,
}
# The web UI's samplers (v1.9+ names), and the "<sampler> <schedule>" names of earlier
# versions, which v1.9+ still accepts.
SAMPLERS: tuple[str, ...] = (
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun Karras",
    "DPM++ 2M SDE Heun Exponential",
    "DPM++ 2S a Karras",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
    "LMS Karras",
    "DPM2 Karras",
    "DPM2 a Karras",
)
_SAMPLER_BY_LOWER = {name.lower(): name for name in SAMPLERS}


def image_parameters(options: dict[str, Any]) -> dict[str, Any]:
    """The seed's defaults with the user's options applied, clamped or dropped (see above)."""
    parameters = dict(DEFAULT_PARAMETERS)
    for name, (low, high) in IMAGE_BOUNDS.items():
        integer = name != "cfg_scale"
        value = options.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if not math.isfinite(value):
            continue
        value = min(max(value, low), high)
        if integer:
            value = int(value)
            if name in ("width", "height"):
                value -= value % 8
        parameters[name] = value if integer else float(value)
    sampler = options.get("sampler_name")
    if isinstance(sampler, str) and (known := _SAMPLER_BY_LOWER.get(sampler.strip().lower())):
        parameters["sampler_name"] = known
    negative = options.get("negative_prompt")
    if isinstance(negative, str) and negative.strip():
        parameters["negative_prompt"] = negative[:NEGATIVE_PROMPT_LIMIT]
    return parameters


def txt2img_body(request: BackendRequest, endpoint: Endpoint) -> dict[str, Any]:
    """The `/sdapi/v1/txt2img` body for the request."""
    body: dict[str, Any] = {"prompt": request.prompt, **image_parameters(request.options)}
    # Only a checkpoint the user named and the worker lists: not a pool or worker name, and
    # not the worker's first model picked for a query that named none.
    if request.model_name and request.model_name in endpoint.models:
        body["override_settings"] = {"sd_model_checkpoint": request.model_name}
        body["override_settings_restore_afterwards"] = False
    return body


def _first_image(answer: Any) -> str:
    """The first generated image of a txt2img answer (after the grid, if the web UI put one
    first), as base64."""
    if not isinstance(answer, dict):
        raise BackendError("worker answer is not a JSON object")
    images = answer.get("images")
    if not isinstance(images, list) or not images:
        raise BackendError("worker answer has no images")
    index = 0
    info = answer.get("info")
    if isinstance(info, str):
        try:
            first = json.loads(info).get("index_of_first_image", 0)
        except (ValueError, AttributeError):
            first = 0
        if isinstance(first, int) and not isinstance(first, bool) and 0 <= first < len(images):
            index = first
    image = images[index]
    if not isinstance(image, str) or not image:
        raise BackendError("worker image is not base64 text")
    if image.startswith("data:image/"):  # some forks answer data URLs
        image = image.partition(",")[2]
    return image


def _checkpoint_names(body: Any) -> list[str]:
    """`model_name` of each checkpoint: the short, stable alias the web UI accepts for
    `sd_model_checkpoint` (a `title` gains its hash once the web UI has computed it)."""
    return [entry["model_name"] for entry in body if isinstance(entry["model_name"], str)]


class A1111Backend(Backend):
    kind = "a1111"
    query_types = frozenset({"imagine"})
    streams = False

    def result_type(self, query_type: str) -> str:
        return "image"

    @classmethod
    def request_headers(cls, endpoint: Endpoint) -> dict[str, str]:
        """The worker's key as HTTP Basic when it is `user:password` (`--api-auth`), else as
        a Bearer token."""
        key = endpoint.key
        if key and ":" in key:
            return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}
        return cls.auth_headers(endpoint)

    async def probe(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> HealthReport:
        deadline = time.monotonic() + seconds

        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        headers = self.request_headers(endpoint)
        options = await client.get(
            f"{endpoint.url}/sdapi/v1/options", headers=headers, timeout=left()
        )
        if options.status_code == 200:
            try:
                if not isinstance(options.json(), dict):
                    return HealthReport(status=502)
            except ValueError:
                return HealthReport(status=502)
        elif options.status_code in (401, 403):
            return HealthReport(status=options.status_code)  # a wrong key is not "healthy"
        else:
            try:
                ping = await client.get(f"{endpoint.url}/internal/ping", timeout=left())
            except httpx.HTTPError:
                return HealthReport(status=options.status_code)
            if ping.status_code != 200:
                return HealthReport(status=options.status_code)
        return HealthReport(status=200, models=await self._models(client, endpoint, left()))

    async def _models(
        self, client: httpx.AsyncClient, endpoint: Endpoint, seconds: float
    ) -> tuple[str, ...] | None:
        """The worker's checkpoints, or None when it does not list them now."""
        try:
            response = await client.get(
                f"{endpoint.url}/sdapi/v1/sd-models",
                headers=self.request_headers(endpoint),
                timeout=seconds,
            )
            if response.status_code != 200:
                return None
            return tuple(_checkpoint_names(response.json()))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def generate(
        self, client: httpx.AsyncClient, endpoint: Endpoint, request: BackendRequest
    ) -> AsyncIterator[str]:
        response = await client.post(
            f"{endpoint.url}/sdapi/v1/txt2img",
            json=txt2img_body(request, endpoint),
            headers=self.request_headers(endpoint),
        )
        self.raise_for_status(response, response.content)
        try:
            answer = response.json()
        except ValueError as exc:
            raise BackendError("worker answer is not JSON") from exc
        try:
            yield await asyncio.to_thread(generated_image, _first_image(answer))
        except BadMedia as exc:
            raise BackendError(f"worker image: {exc.message}") from None
