"""How REST refusals look, declared in the OpenAPI document.

The broker refuses input its rules forbid with `{"detail": {"code", "message"}}`; FastAPI
refuses input its schema forbids with `{"detail": [{"loc", "msg", "type"}]}`. Both are 422,
so the document declares both there, and clients (and schemathesis) can rely on it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Refusal(BaseModel):
    code: str  # an ErrorCode
    message: str
    retry_after: float | None = None


class RefusalBody(BaseModel):
    detail: Refusal


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationFailure(BaseModel):
    detail: list[FieldError]


REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "model": RefusalBody | ValidationFailure,
        "description": "The input breaks a rule (`code`, `message`) or the schema (`loc`, `msg`)",
    }
}
