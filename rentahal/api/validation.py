"""The 422 answered outside `/v1` for a request FastAPI could not validate."""

from __future__ import annotations

from fastapi import status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def validation_failure(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (`{"detail": [{"loc", "msg", "type", "input"}]}`), but one that can
    always be sent: an `input` JSON cannot carry (a lone surrogate, a NaN) would make FastAPI's
    handler fail with a 500, so such an answer goes without its inputs."""
    errors = jsonable_encoder(exc.errors())
    try:
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    except (UnicodeEncodeError, ValueError):
        bare = [{k: v for k, v in error.items() if k != "input"} for error in errors]
        return JSONResponse({"detail": bare}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
