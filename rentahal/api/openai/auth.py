"""Who is calling `/v1`: only API keys authenticate (`Authorization: Bearer …`); a
browser's session cookie is not looked at, so no cross-site request can ride on it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, status

from rentahal.api.deps import BrokerDep
from rentahal.api.openai.errors import OpenAIError
from rentahal.api.security import client_address
from rentahal.auth import Principal
from rentahal.membership import holds_worker_token


async def api_key_principal(request: Request, broker: BrokerDep) -> Principal:
    """The owner of the API key in `Authorization: Bearer …`; cookies are not looked at."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    principal = None
    if scheme.lower() == "bearer" and key.strip():
        principal = await broker.auth.authenticate(request.headers, {})
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
    if holds_worker_token(principal):
        raise OpenAIError(
            status.HTTP_403_FORBIDDEN,
            "a worker token only lets a machine join the realm as a worker",
            type="permission_error",
            code="insufficient_permissions",
        )
    return principal.seen_at(client_address(request))


KeyDep = Annotated[Principal, Depends(api_key_principal)]
