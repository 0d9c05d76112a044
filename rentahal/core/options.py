"""A query's options: the settings the broker or a backend reads, each within its bounds.

One model (`QueryOptions`) for the bus, REST and the OpenAI API, so that all three accept and
refuse the same things; the backends pass on only `generation_options` within `OPTION_BOUNDS`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from rentahal.core.validation import describe

# Generation options a user may set, and their bounds; anything else is dropped.
OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "max_tokens": (1, 32_768),
    "seed": (0, 2**31 - 1),
}


def _bounds(low: float, high: float) -> Any:
    return Field(ge=low, le=high, allow_inf_nan=False)


# A query's generation settings, within the bounds the backends hold them to.
Temperature = Annotated[float, _bounds(*OPTION_BOUNDS["temperature"])]
TopP = Annotated[float, _bounds(*OPTION_BOUNDS["top_p"])]
MaxTokens = Annotated[int, _bounds(*OPTION_BOUNDS["max_tokens"])]
# OpenAI's seed is any 64-bit integer (clients draw them at random); each backend holds it to
# what its protocol takes, and the image ones read -1 as "pick one".
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]
Speaker = Annotated[str, StringConstraints(max_length=64)]


class QueryOptions(BaseModel):
    """The options a query may carry that the broker or a backend reads, each within the
    bounds it is used with; other keys pass to the worker as they are. One model for the
    bus, REST and the OpenAI API: a value the backend would clamp or choke on (a NaN
    temperature, `max_tokens` of -1 or 10^30) is refused where the query comes in, not
    failed later by a worker. Image options (`width`, `steps`…) are not here: each imagine
    backend clamps them to its protocol's bounds (`IMAGE_BOUNDS`), as documented."""

    model_config = ConfigDict(extra="allow", frozen=True)

    stream: bool | None = None  # stream the answer as chunks (the default)
    speak: bool | None = None  # speech: answer aloud too
    spot: bool | None = None  # stt: list the wake and command words heard
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    seed: Seed | None = None
    language: Language | None = None  # stt
    speaker: Speaker | None = None  # tts


MAX_OPTIONS_JSON = 4096


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with the known ones in their types (`"stream": "false"` is False, not a
    true string), or pydantic's error naming each field out of its bounds."""
    if len(json.dumps(options)) > MAX_OPTIONS_JSON:
        raise ValueError(f"options are limited to {MAX_OPTIONS_JSON // 1024} KiB of JSON")
    try:
        checked = QueryOptions.model_validate(options)
    except ValidationError as exc:
        raise PydanticCustomError(
            "invalid_options", "{problems}", {"problems": describe(exc)}
        ) from None
    return checked.model_dump(exclude_unset=True)


# A query's settings (`stream`, `speak`, `temperature`…), checked where a message is parsed.
Options = Annotated[
    dict[str, Any],
    AfterValidator(_checked_options),
    WithJsonSchema(QueryOptions.model_json_schema()),
]
