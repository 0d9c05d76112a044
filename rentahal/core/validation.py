"""What text from outside must be before the broker takes it: one rule for every way in.

The bus, REST and the OpenAI API all hold what a user sends to `text_fault` (no NUL, which
PostgreSQL cannot store; no lone surrogate, which is not Unicode), through `Storable` models
and `StorableText` fields; `describe` says what a validation error found without echoing the
input (it may be megabytes long, or text no reply can carry).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError, model_validator
from pydantic_core import PydanticCustomError

T = TypeVar("T")

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python str, only a lone one is left


# What no text column can hold: a NUL (PostgreSQL refuses it) or a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Text from a worker (not a user, who is refused by `text_fault`) as the store can keep
    it: what it cannot hold becomes U+FFFD, rather than the whole answer being lost."""
    return _UNSTORABLE.sub("\ufffd", text)


def lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate. JSON may escape one (`"\\ud800"`), but it
    is no Unicode text: UTF-8 cannot encode it, so no database, log or reply can carry it."""
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


def text_fault(value: object) -> str | None:
    """Why a JSON value's text cannot be taken in, or None: the rule the bus, REST and the
    OpenAI API all apply to what a user sends. Every string is looked at, keys too: a lone
    surrogate (see `lone_surrogate`), or a NUL, which PostgreSQL's text and jsonb cannot
    hold (SQLite can, so without this rule the same input would pass or fail by database)."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        where = path or "the text"
        if isinstance(item, str):
            if "\x00" in item:
                return f"{where} holds a NUL character (\\u0000), which cannot be stored"
            if lone_surrogate(item):
                return f"{where} holds a lone UTF-16 surrogate, which is not Unicode text"
        elif isinstance(item, dict):
            for key, child in item.items():
                # The key after its value: popped first, so no path names a key not yet seen.
                stack.append((child, f"{path}.{str(key)[:64]}".removeprefix(".")))
                stack.append((key, f"a key of {path or 'the object'}"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}.{index}") for index, child in enumerate(item))
    return None


def _storable(value: T) -> T:
    """`value`, or pydantic's error for what `text_fault` finds in it."""
    if (fault := text_fault(value)) is not None:
        raise PydanticCustomError("unfit_text", "{fault}", {"fault": fault})
    return value


# One string held to `text_fault` (a URL's path parameter, which the store looks up).
StorableText = Annotated[str, AfterValidator(_storable)]


class Storable(BaseModel):
    """A model whose text may be stored, logged or echoed: its input, every string in it,
    must pass `text_fault` before any field is looked at."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        return _storable(data)


def describe(error: ValidationError, *, skip: int = 0) -> str:
    """The first problems of a validation error, `where: what`, without the input: it may be
    megabytes long, or text no reply can carry. `skip` leading parts of each location are
    left out (a message's type tag); a problem of the whole is `what` alone."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) for p in item["loc"][skip:])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)
