"""Connecting a user's Gmail: Google's OAuth 2.0 web-server flow with PKCE, run by the broker.

`GET /api/v1/gmail/connect` (signed in: a session or an API key) records a pending
authorization (a single-use `state` bound to the user, and the PKCE verifier) and sends the
browser to Google's consent page. Google sends it back to `GET /api/v1/gmail/callback`, which
must arrive with the same user's session cookie (SameSite=Lax cookies ride along on that
top-level navigation); the code is exchanged with the verifier and the tokens kept encrypted.
`GET /api/v1/gmail` tells whether Gmail is connected; `DELETE /api/v1/gmail` revokes the grant
at Google and forgets it (cookie-authenticated deletes pass the usual same-origin check).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Annotated

import structlog
from authlib.common.security import generate_token
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from rentahal.api.deps import BrokerDep, PrincipalDep
from rentahal.broker import Broker
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.intents.gmail import (
    CALLBACK_PATH,
    CONNECT_PATH,
    GMAIL_READONLY,
    PROVIDER,
    GmailApi,
    GoogleOAuth,
    OAuthFailure,
    configured,
)
from rentahal.store.oauth_tokens import TokenCipher

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/gmail", tags=["gmail"])

NO_STORE = {"Cache-Control": "no-store"}


class GmailStatus(BaseModel):
    configured: bool  # the sysop has set up a Google OAuth client
    connected: bool
    email: str | None = None


def cipher_for(broker: Broker) -> TokenCipher:
    """The cipher of the broker's secret key, as the intent uses it (`IntentCall.secret_key`)."""
    return TokenCipher(broker.secret_key)


def _not_configured() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail={
            "code": ErrorCode.NOT_CONFIGURED,
            "message": "Gmail is not set up on this broker: the sysop must register a Google "
            "OAuth client (google_client_id and google_client_secret).",
        },
    )


def redirect_uri(request: Request, broker: Broker) -> str:
    base = broker.settings.public_url.strip().rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}{CALLBACK_PATH}"


@router.get(
    "/connect",
    status_code=status.HTTP_303_SEE_OTHER,
    response_class=RedirectResponse,
    responses={303: {"description": "To Google's consent page", "content": {}}},
)
async def connect(request: Request, principal: PrincipalDep, broker: BrokerDep) -> Response:
    """Start connecting your Gmail (read-only): redirects to Google's consent page."""
    if not configured(broker.settings):
        raise _not_configured()
    oauth = GoogleOAuth(broker.settings)
    callback = redirect_uri(request, broker)
    # 64 characters of [A-Za-z0-9]: within PKCE's 43-128 unreserved characters.
    verifier = generate_token(64)
    state = await broker.store.oauth_tokens.begin_authorization(
        principal.user.id,
        PROVIDER,
        code_verifier=verifier,
        redirect_uri=callback,
        cipher=cipher_for(broker),
    )
    url = await oauth.authorization_url(redirect_uri=callback, state=state, code_verifier=verifier)
    return RedirectResponse(url, status.HTTP_303_SEE_OTHER, headers=NO_STORE)


def page(title: str, message: str, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    """A small text-only page (no script, no style: it satisfies the site's CSP)."""
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · RENT A HAL</title></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n<p>{html.escape(message)}</p>\n"
        '<p><a href="/">Back to RENT A HAL</a></p></body></html>\n'
    )
    return HTMLResponse(body, status_code=status_code, headers=NO_STORE)


def _failed(message: str, status_code: int = status.HTTP_400_BAD_REQUEST) -> HTMLResponse:
    return page("Gmail was not connected", message, status_code)


AGAIN = f"Start again from {CONNECT_PATH}."


@router.get("/callback", response_class=HTMLResponse)
async def callback(
    request: Request,
    broker: BrokerDep,
    code: Annotated[str, Query(max_length=2048)] = "",
    state: Annotated[str, Query(max_length=256)] = "",
    error: Annotated[str, Query(max_length=256)] = "",
) -> HTMLResponse:
    """Where Google sends the browser back after the consent page."""
    try:
        principal = await broker.auth.authenticate(request.headers, request.cookies)
    except ProtocolError as refusal:  # banned
        return _failed(refusal.message, status.HTTP_403_FORBIDDEN)
    if principal is None:
        return _failed(
            "You are not signed in to RENT A HAL in this browser. Open RENT A HAL, then "
            f"connect Gmail from the same browser. {AGAIN}",
            status.HTTP_401_UNAUTHORIZED,
        )
    user_id = principal.user.id
    cipher = cipher_for(broker)
    pending = (
        await broker.store.oauth_tokens.take_authorization(state, user_id, PROVIDER, cipher)
        if state
        else None
    )
    if error:
        if error == "access_denied":
            return _failed("You did not allow RENT A HAL to read your Gmail, so nothing changed.")
        return _failed(f"Google refused the request ({error}). {AGAIN}")
    if pending is None:
        return _failed(
            "This sign-in is not valid: it is unknown, expired, already used, or was started "
            f"by another account. {AGAIN}"
        )
    if not code:
        return _failed(f"Google sent no authorization code. {AGAIN}")
    if not configured(broker.settings):
        return _failed(
            "Gmail is no longer set up on this broker.", status.HTTP_503_SERVICE_UNAVAILABLE
        )
    oauth = GoogleOAuth(broker.settings)
    try:
        grant = await oauth.exchange(
            code=code, code_verifier=pending.code_verifier, redirect_uri=pending.redirect_uri
        )
    except OAuthFailure as exc:
        log.info("gmail.exchange_failed", user_id=user_id, error=exc.error)
        if exc.error == "unavailable":
            return _failed(
                f"Google's sign-in service could not be reached. {AGAIN}",
                status.HTTP_502_BAD_GATEWAY,
            )
        detail = f"{exc.error}: {exc.description}" if exc.description else exc.error
        return _failed(f"Google did not accept the authorization ({detail}). {AGAIN}")
    if GMAIL_READONLY not in grant.scopes:
        await oauth.revoke(grant)
        return _failed(
            "You did not allow RENT A HAL to read your email (the Gmail box was left "
            f"unticked on Google's page). {AGAIN}"
        )
    email = await GmailApi(broker.intents.http, broker.settings.gmail_api_endpoint).profile_email(
        grant.access_token
    )
    grant = dataclasses.replace(grant, email=email)
    await broker.store.oauth_tokens.save(user_id, PROVIDER, grant, cipher)
    log.info("gmail.connected", user_id=user_id, offline=grant.refresh_token is not None)
    account = f" ({email})" if email else ""
    return page(
        "Gmail is connected",
        f"RENT A HAL can now read your unread Gmail{account}, read-only. "
        "You can close this tab and ask: read my email.",
    )


@router.get("")
async def gmail_status(principal: PrincipalDep, broker: BrokerDep) -> GmailStatus:
    """Whether your Gmail is connected, and to which address."""
    grant = await broker.store.oauth_tokens.get(principal.user.id, PROVIDER, cipher_for(broker))
    return GmailStatus(
        configured=configured(broker.settings),
        connected=grant is not None,
        email=grant.email if grant else None,
    )


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def disconnect(principal: PrincipalDep, broker: BrokerDep) -> Response:
    """Disconnect your Gmail: the grant is revoked at Google (best effort) and forgotten."""
    user_id = principal.user.id
    grant = await broker.store.oauth_tokens.get(user_id, PROVIDER, cipher_for(broker))
    if grant is not None and configured(broker.settings):
        await GoogleOAuth(broker.settings).revoke(grant)
    if await broker.store.oauth_tokens.delete(user_id, PROVIDER):
        log.info("gmail.disconnected", user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
