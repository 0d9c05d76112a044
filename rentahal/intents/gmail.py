"""The Gmail intent: "read my email" → a short spoken summary of the newest unread mail.

Read-only, and server-side (SPEC §7): the user connects their Google account once in a
browser tab (`GET /api/v1/gmail/connect`, see `rentahal.api.oauth`), through Google's OAuth
2.0 web-server flow with PKCE (S256) and a single-use `state` bound to their session. The
broker keeps the grant encrypted in its store (`rentahal.store.oauth_tokens`), refreshes the
access token when it runs out, and calls the Gmail API v1 itself: the page never sees a
token. The OAuth protocol work (authorization URL, code exchange, refresh, revocation) is
Authlib's `AsyncOAuth2Client`; this module maps Google's answers to words a user can act on.
Tokens and the client secret never appear in a message or a log line.
"""

from __future__ import annotations

import asyncio
import html
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

import authlib.deprecate  # noqa: F401 - loaded first so the filter below outranks its own
import httpx
import structlog

from rentahal.config import Settings
from rentahal.core.errors import ErrorCode
from rentahal.intents.base import Answer, Intent, IntentCall, IntentError
from rentahal.store import Store
from rentahal.store.oauth_tokens import OAuthGrant, TokenCipher

with warnings.catch_warnings():
    # Authlib announces that it would rather have the `httpx2` fork; httpx is what we use.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = structlog.get_logger(__name__)

PROVIDER = "google"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
CONNECT_PATH = "/api/v1/gmail/connect"
CALLBACK_PATH = "/api/v1/gmail/callback"
MAX_MESSAGES = 5
SNIPPET_CHARS = 120
EXPIRY_LEEWAY = timedelta(seconds=60)  # refresh this long before Google's expiry
HTTP_TIMEOUT = 15.0
_ERROR_TEXT_CHARS = 200


def configured(settings: Settings) -> bool:
    """The sysop has registered an OAuth client with Google for this broker."""
    secret = settings.google_client_secret
    return bool(settings.google_client_id.strip() and secret and secret.get_secret_value())


def connect_url(settings: Settings) -> str:
    """Where a user goes to connect Gmail: the full URL if the broker knows its address."""
    base = settings.public_url.strip().rstrip("/")
    return f"{base}{CONNECT_PATH}" if base else CONNECT_PATH


def not_configured() -> IntentError:
    return IntentError(
        ErrorCode.NOT_CONFIGURED,
        "Gmail is not set up on this broker: the sysop must register a Google OAuth client "
        "(google_client_id and google_client_secret).",
    )


def not_connected(settings: Settings, *, lapsed: bool = False) -> IntentError:
    if lapsed:
        return IntentError(
            ErrorCode.NOT_CONNECTED,
            "Your Gmail connection has expired or was revoked: open "
            f"{connect_url(settings)} to connect it again.",
        )
    return IntentError(
        ErrorCode.NOT_CONNECTED,
        f"Gmail is not connected: open {connect_url(settings)} to connect it.",
    )


# --------------------------------------------------------------------------- OAuth


class OAuthFailure(Exception):
    """Google's OAuth endpoints refused or failed. `error` is the OAuth error code
    (`invalid_grant`, …) or `unavailable` when Google could not be reached or answered 5xx."""

    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description[:_ERROR_TEXT_CHARS]
        super().__init__(f"{error}: {self.description}" if self.description else error)

    @property
    def revoked(self) -> bool:
        """The grant is gone: the refresh token expired or the user revoked access."""
        return self.error == "invalid_grant"

    @property
    def client_refused(self) -> bool:
        """The broker's own OAuth client is wrong (id, secret, or not allowed this grant)."""
        return self.error in ("invalid_client", "unauthorized_client")


class GoogleOAuth:
    """Google's OAuth 2.0 endpoints for a web server with PKCE, through Authlib."""

    def __init__(self, settings: Settings) -> None:
        if not configured(settings):
            raise not_configured()
        assert settings.google_client_secret is not None
        self._settings = settings
        self._client_id = settings.google_client_id.strip()
        self._client_secret = settings.google_client_secret.get_secret_value()

    def _client(self, redirect_uri: str | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            # Google takes the client's credentials in the form body or as HTTP Basic; the
            # form is what its documentation shows.
            token_endpoint_auth_method="client_secret_post",
            # Revocation needs no client credentials: don't send the secret there.
            revocation_endpoint_auth_method="none",
            code_challenge_method="S256",
            redirect_uri=redirect_uri,
            timeout=HTTP_TIMEOUT,
        )

    async def authorization_url(self, *, redirect_uri: str, state: str, code_verifier: str) -> str:
        """Google's consent page for read-only Gmail access, asking for a refresh token."""
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self._settings.google_auth_endpoint,
                state=state,
                code_verifier=code_verifier,
                scope=GMAIL_READONLY,
                access_type="offline",  # a refresh token, to read mail later
                prompt="consent",  # …even when the user granted access before
                include_granted_scopes="true",
            )
        return str(url)

    async def exchange(self, *, code: str, code_verifier: str, redirect_uri: str) -> OAuthGrant:
        """Trade the authorization code (with its PKCE verifier) for tokens."""
        async with self._client(redirect_uri) as client:
            token = await _oauth_call(
                client.fetch_token(
                    self._settings.google_token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
            )
        return _grant(token, previous=None)

    async def refresh(self, grant: OAuthGrant) -> OAuthGrant:
        """A fresh access token; raises `OAuthFailure` (`revoked` when the grant is gone)."""
        if grant.refresh_token is None:
            raise OAuthFailure("invalid_grant", "no refresh token was kept")
        async with self._client() as client:
            token = await _oauth_call(
                client.refresh_token(
                    self._settings.google_token_endpoint, refresh_token=grant.refresh_token
                )
            )
        return _grant(token, previous=grant)

    async def revoke(self, grant: OAuthGrant) -> bool:
        """Withdraw the grant at Google (revoking the refresh token ends the access token
        too). Best effort: False if Google did not confirm."""
        token = grant.refresh_token or grant.access_token
        try:
            async with self._client() as client:
                response = await client.revoke_token(
                    self._settings.google_revoke_endpoint, token=token
                )
        except httpx.HTTPError as exc:
            log.warning("gmail.revoke_failed", error=type(exc).__name__)
            return False
        if not response.is_success:
            log.warning("gmail.revoke_refused", status=response.status_code)
        return response.is_success


async def _oauth_call(call: Any) -> dict[str, Any]:
    try:
        token = await call
    except OAuthError as exc:
        raise OAuthFailure(str(exc.error or "oauth_error"), str(exc.description or "")) from None
    except httpx.HTTPStatusError as exc:
        raise OAuthFailure("unavailable", f"HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise OAuthFailure("unavailable", type(exc).__name__) from None
    except ValueError:  # not a JSON object
        raise OAuthFailure("unavailable", "not an OAuth answer") from None
    if not isinstance(token, dict) or not token.get("access_token"):
        raise OAuthFailure("unavailable", "no access token in the answer")
    return dict(token)


def _grant(token: dict[str, Any], previous: OAuthGrant | None) -> OAuthGrant:
    expires_at = token.get("expires_at")
    refresh = token.get("refresh_token") or (previous.refresh_token if previous else None)
    return OAuthGrant(
        access_token=str(token["access_token"]),
        refresh_token=str(refresh) if refresh else None,
        expires_at=(
            datetime.fromtimestamp(expires_at, UTC) if isinstance(expires_at, int | float) else None
        ),
        scope=str(token.get("scope") or (previous.scope if previous else "")),
        email=previous.email if previous else None,
    )


# --------------------------------------------------------------------------- Gmail API


class GmailUnauthorized(Exception):
    """The Gmail API refused the access token (HTTP 401)."""


class GmailFailure(Exception):
    """The Gmail API failed otherwise; the message is fit for the user."""

    def __init__(self, message: str, *, status: int | None = None, scope: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.insufficient_scope = scope


@dataclass(frozen=True, slots=True)
class Mail:
    """One message as the summary needs it."""

    id: str
    sender: str
    subject: str
    snippet: str
    received: int  # Gmail's internalDate: ms since the epoch


@dataclass(frozen=True, slots=True)
class Unread:
    ids: list[str]
    estimate: int  # Gmail's resultSizeEstimate
    more: bool  # another page exists


class GmailApi:
    """The few Gmail API v1 calls the intent makes, as the token's user (`me`)."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str) -> None:
        self._http = http
        self._base = f"{endpoint.rstrip('/')}/gmail/v1/users/me"

    async def _get(
        self, path: str, token: str, params: Sequence[tuple[str, str | int]] = ()
    ) -> dict[str, Any] | None:
        """The JSON answer, or None for 404 (a message deleted since it was listed)."""
        try:
            response = await self._http.get(
                f"{self._base}{path}",
                params=list(params),
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=HTTP_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise GmailFailure(f"Gmail could not be reached ({type(exc).__name__}).") from None
        if response.status_code == 401:
            raise GmailUnauthorized
        if response.status_code == 404:
            return None
        if not response.is_success:
            message, reason = _google_error(response)
            raise GmailFailure(
                f"Gmail answered HTTP {response.status_code}"
                + (f" ({message.rstrip('. ')})" if message else "")
                + ".",
                status=response.status_code,
                scope=response.status_code == 403 and "insufficient" in reason.lower(),
            )
        try:
            body = response.json()
        except ValueError:
            raise GmailFailure("Gmail sent an answer that is not JSON.") from None
        if not isinstance(body, dict):
            raise GmailFailure("Gmail sent an unexpected answer.")
        return body

    async def unread(self, token: str, limit: int) -> Unread:
        """The newest unread messages in the inbox (ids only)."""
        body = await self._get(
            "/messages",
            token,
            [("q", "is:unread"), ("labelIds", "INBOX"), ("maxResults", limit)],
        )
        if body is None:
            raise GmailFailure("Gmail did not find the mailbox.", status=404)
        listed = body.get("messages") or []  # absent when nothing matches
        ids = [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
        estimate = body.get("resultSizeEstimate")
        return Unread(
            ids=ids[:limit],
            estimate=estimate if isinstance(estimate, int) else len(ids),
            more=bool(body.get("nextPageToken")),
        )

    async def message(self, token: str, message_id: str) -> Mail | None:
        body = await self._get(
            f"/messages/{message_id}",
            token,
            [
                ("format", "metadata"),
                ("metadataHeaders", "From"),
                ("metadataHeaders", "Subject"),
                ("metadataHeaders", "Date"),
            ],
        )
        if body is None:
            return None
        headers: dict[str, str] = {}
        payload = body.get("payload")
        for header in payload.get("headers", []) if isinstance(payload, dict) else []:
            if isinstance(header, dict) and isinstance(header.get("name"), str):
                headers.setdefault(header["name"].lower(), str(header.get("value") or ""))
        try:
            received = int(body.get("internalDate") or 0)
        except (TypeError, ValueError):
            received = 0
        return Mail(
            id=message_id,
            sender=sender_name(headers.get("from", "")),
            subject=_clean(_decoded(headers.get("subject", ""))),
            snippet=_clean(html.unescape(str(body.get("snippet") or ""))),
            received=received,
        )

    async def profile_email(self, token: str) -> str | None:
        """The account's address (best effort: None if Gmail does not say)."""
        try:
            body = await self._get("/profile", token)
        except (GmailUnauthorized, GmailFailure):
            return None
        address = body.get("emailAddress") if body else None
        return address if isinstance(address, str) and "@" in address else None


def _google_error(response: httpx.Response) -> tuple[str, str]:
    """Google's `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    message = str(error.get("message") or error.get("status") or "")[:_ERROR_TEXT_CHARS]
    reasons = [str(e.get("reason", "")) for e in error.get("errors") or [] if isinstance(e, dict)]
    return message, " ".join([*reasons, message])


# --------------------------------------------------------------------------- wording

_SPACES = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACES.sub(" ", "".join(c if c.isprintable() else " " for c in text)).strip()


def _decoded(value: str) -> str:
    """A header with RFC 2047 encoded words (`=?UTF-8?B?…?=`) as plain text."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def sender_name(from_header: str) -> str:
    """`"Ann Smith" <ann@example.com>` → `Ann Smith`; a bare address stays an address."""
    name, address = parseaddr(_decoded(from_header))
    return _clean(name.strip("\"' ")) or _clean(address) or "an unknown sender"


def trimmed(text: str, limit: int = SNIPPET_CHARS) -> str:
    """At most `limit` characters, cut at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:-") + "…"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def summary(mails: Sequence[Mail], unread: int, *, more: bool = False) -> str:
    """ "You have 2 unread emails. 1: from Ann Smith, subject Lunch: Are we still on?…" """
    if not mails:
        return "You have no unread email."
    if more or unread > len(mails):
        total = max(unread, len(mails) + 1)
        parts = [f"You have about {total} unread emails. The newest {len(mails)}:"]
    elif len(mails) == 1:
        parts = ["You have 1 unread email."]
    else:
        parts = [f"You have {len(mails)} unread emails."]
    for number, mail in enumerate(mails, 1):
        about = f"subject {mail.subject}" if mail.subject else "no subject"
        heading = f"{number}: from {mail.sender}, {about}"
        snippet = trimmed(mail.snippet)
        parts.append(_sentence(f"{heading}: {snippet}" if snippet else heading))
    return " ".join(parts)


# --------------------------------------------------------------------------- reading


class GmailReader:
    """Reads one user's unread mail with their stored grant, keeping the grant fresh."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        http: httpx.AsyncClient,
        cipher: TokenCipher,
        user_id: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cipher = cipher
        self.user_id = user_id
        self.oauth = GoogleOAuth(settings)
        self.api = GmailApi(http, settings.gmail_api_endpoint)

    async def _forget(self) -> None:
        await self.store.oauth_tokens.delete(self.user_id, PROVIDER)

    async def _refresh(self, grant: OAuthGrant) -> OAuthGrant:
        try:
            fresh = await self.oauth.refresh(grant)
        except OAuthFailure as exc:
            log.info("gmail.refresh_failed", user_id=self.user_id, error=exc.error)
            if exc.revoked:
                await self._forget()
                raise not_connected(self.settings, lapsed=True) from None
            if exc.client_refused:
                raise IntentError(
                    ErrorCode.NOT_CONFIGURED,
                    f"Google refused this broker's OAuth client ({exc.error}): the sysop "
                    "should check google_client_id and google_client_secret.",
                ) from None
            raise IntentError(
                ErrorCode.UPSTREAM_ERROR,
                "Google's sign-in service did not renew the Gmail access "
                f"({exc.description or exc.error}). Try again later.",
            ) from None
        await self.store.oauth_tokens.save(self.user_id, PROVIDER, fresh, self.cipher)
        log.info("gmail.refreshed", user_id=self.user_id)
        return fresh

    async def read_unread(self, limit: int = MAX_MESSAGES) -> str:
        grant = await self.store.oauth_tokens.get(self.user_id, PROVIDER, self.cipher)
        if grant is None:
            raise not_connected(self.settings)
        refreshed = False
        if grant.expires_within(EXPIRY_LEEWAY):
            grant, refreshed = await self._refresh(grant), True
        while True:
            try:
                return await self._summary(grant.access_token, limit)
            except GmailUnauthorized:
                if refreshed:  # a token Google just issued is refused: start over
                    log.info("gmail.token_refused", user_id=self.user_id)
                    await self._forget()
                    raise not_connected(self.settings, lapsed=True) from None
                grant, refreshed = await self._refresh(grant), True  # revoked early, or skew
            except GmailFailure as exc:
                log.info("gmail.api_failed", user_id=self.user_id, status=exc.status)
                if exc.insufficient_scope:
                    raise IntentError(
                        ErrorCode.NOT_CONNECTED,
                        "Gmail did not allow reading your mail with the access you granted: "
                        f"open {connect_url(self.settings)} and allow reading email.",
                    ) from None
                raise IntentError(ErrorCode.UPSTREAM_ERROR, f"{exc} Try again later.") from None

    async def _summary(self, token: str, limit: int) -> str:
        unread = await self.api.unread(token, limit)
        fetched = await asyncio.gather(
            *(self.api.message(token, i) for i in unread.ids), return_exceptions=True
        )
        for outcome in fetched:  # every fetch has finished: none is left running
            if isinstance(outcome, BaseException):
                raise outcome
        mails = sorted((m for m in fetched if isinstance(m, Mail)), key=lambda m: -m.received)
        return summary(mails, unread.estimate, more=unread.more)


class GmailIntent(Intent):
    """Reads the newest unread Gmail messages aloud: sender, subject and a snippet."""

    name = "gmail"
    triggers = ("gmail", "email", "mail")
    keywords = (
        "read my email",
        "read my mail",
        "read my emails",
        "check my email",
        "check my mail",
        "check my inbox",
        "any new mail",
        "any new email",
        "any new emails",
        "unread email",
        "unread emails",
        "unread mail",
        "new messages in my inbox",
    )
    description = "Read your newest unread Gmail messages: sender, subject and a snippet."

    def available(self, settings: Settings) -> bool:
        return configured(settings)

    async def handle(self, call: IntentCall) -> Answer:
        if not configured(call.settings):
            raise not_configured()
        reader = GmailReader(
            call.settings, call.store, call.http, TokenCipher(call.secret_key), call.user.id
        )
        return Answer(await reader.read_unread(MAX_MESSAGES))
