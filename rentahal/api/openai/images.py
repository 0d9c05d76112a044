"""`POST /v1/images/generations`: an `imagine` query."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, StringConstraints

from rentahal.api.deps import BrokerDep
from rentahal.api.openai.auth import KeyDep
from rentahal.api.openai.errors import OpenAIError, OpenAIRoute, bad_request
from rentahal.api.openai.running import created_at, finished, media_target, query_spec, submit
from rentahal.backends.base import IMAGE_BOUNDS
from rentahal.core.validation import Storable

router = APIRouter(route_class=OpenAIRoute)


class ImageRequest(Storable):
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
    spec = query_spec(
        prompt=request.prompt,
        query_type="imagine",
        model_name=media_target(broker, "imagine", request.model),
        options=image_options(request.size),
    )
    query = await submit(principal, broker, spec)
    done = await finished(broker, query)
    if not done.output:
        raise OpenAIError(502, "the worker made no image", type="server_error", code="no_output")
    if request.response_format == "url":
        url = f"{str(http.base_url).rstrip('/')}/api/v1/queries/{done.id}/output"
        picture: dict[str, Any] = {"url": url, "revised_prompt": None}
    else:
        picture = {"b64_json": done.output, "revised_prompt": None}
    return JSONResponse({"created": created_at(done), "data": [picture]})
