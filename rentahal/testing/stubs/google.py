"""Stub of Google's OAuth 2.0 endpoints (web-server flow with PKCE) and the Gmail API v1.

Point the broker at it with ``google_auth_endpoint = <stub>/o/oauth2/v2/auth``,
``google_token_endpoint = <stub>/token``, ``google_revoke_endpoint = <stub>/revoke`` and
``gmail_api_endpoint = <stub>``, and the client id/secret :data:`CLIENT_ID` /
:data:`CLIENT_SECRET` (or others set through the control API).

Follows Google's "OAuth 2.0 for Web Server Applications" and the Gmail API reference:

- ``GET /o/oauth2/v2/auth`` checks ``client_id`` (unknown: 401 ``invalid_client``),
  ``redirect_uri`` (required; if redirect URIs are registered it must be one:
  ``redirect_uri_mismatch``), ``response_type=code`` (``unsupported_response_type``),
  ``scope`` (required, known Google scopes only: ``invalid_scope``) and PKCE: this stub
  *requires* a ``code_challenge`` with ``code_challenge_method=S256`` (Google also takes
  ``plain`` or none). Errors are an HTML error page with that status, as Google shows one
  instead of redirecting. Otherwise it acts as a consenting user and redirects (302) to
  ``redirect_uri?state=…&code=…&scope=…&authuser=0&prompt=consent``; told to deny,
  ``redirect_uri?error=access_denied&state=…``. A refresh token is issued only for
  ``access_type=offline``.
- ``POST /token`` (form-encoded; client credentials in the form or HTTP Basic: else 401
  ``invalid_client``). ``grant_type=authorization_code``: ``code`` (single use, ten
  minutes; replaying one revokes what it issued), same ``client_id`` and ``redirect_uri``
  as the authorization (``redirect_uri_mismatch``), ``code_verifier`` whose SHA-256,
  base64url without padding, is the ``code_challenge`` (``invalid_grant``). Answers
  ``{access_token, expires_in, refresh_token?, scope, token_type: "Bearer"}``.
  ``grant_type=refresh_token``: a live refresh token of this client, else 400
  ``invalid_grant`` "Token has been expired or revoked."; answers without a new refresh
  token. Errors are ``{"error", "error_description"}``.
- ``POST /revoke`` with ``token`` (form or query): an access or refresh token; the whole
  grant is revoked. 200 ``{}``; unknown: 400 ``invalid_token``.
- Gmail: ``GET /gmail/v1/users/{userId}/messages`` (``q`` with ``is:unread``, ``is:read``,
  ``in:``/``label:``, ``from:`` and words; ``labelIds`` repeated; ``maxResults`` ≤ 500;
  ``pageToken``; ``includeSpamTrash``) → ``{messages: [{id, threadId}], nextPageToken?,
  resultSizeEstimate}`` newest first, ``messages`` left out when nothing matches;
  ``GET …/messages/{id}`` (``format`` full|metadata|minimal, ``metadataHeaders`` repeated);
  ``GET …/profile``. ``Authorization: Bearer`` is required: a missing, unknown, expired or
  revoked token is 401 in Google's shape ``{"error": {"code", "message", "errors",
  "status": "UNAUTHENTICATED"}}``. The shared ``fail_status``/``fail_count`` behaviour
  makes Gmail calls fail with that status (Google's error shape).

Mailbox: :data:`MAILBOX`, a few read and unread messages (one unread in spam).

Control API, beside the shared ``/_stub`` one (``POST /_stub/reset`` resets this too):

- ``GET|POST /_stub/google/config``: ``client_id``, ``client_secret``, ``token_lifetime``
  (``expires_in`` of tokens issued from now on), ``deny_consent``, ``granted_scope`` (grant
  this instead of what was asked), ``redirect_uris`` (registered; empty: any),
  ``account_email``.
- ``POST /_stub/google/expire`` expires every access token issued so far (as if their hour
  had passed); ``POST /_stub/google/revoke_all`` revokes every grant (as the user would at
  myaccount.google.com).
- ``GET /_stub/google/tokens``: the tokens issued, for tests that look for them elsewhere.
- ``GET /_stub/google/requests``: the protocol requests with their decoded query string and
  form body (``{method, path, query, form, headers}``, values as lists), which the shared
  log does not keep; ``DELETE`` clears it.
- ``GET|PUT /_stub/google/mailbox``: the messages (``PUT {"messages": [...]}`` replaces them
  until the next reset).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from rentahal.testing.stubs.base import build_app, json_object
from rentahal.testing.stubs.state import StubState

CLIENT_ID = "1234567890-stub.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-stub-client-secret"
ACCOUNT_EMAIL = "hal.user@gmail.com"
DEFAULT_TOKEN_LIFETIME = 3599
CODE_LIFETIME = 600.0
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_METADATA = "https://www.googleapis.com/auth/gmail.metadata"
_GMAIL_READ_SCOPES = frozenset(
    {
        GMAIL_READONLY,
        GMAIL_METADATA,
        "https://www.googleapis.com/auth/gmail.modify",
        "https://mail.google.com/",
    }
)
KNOWN_SCOPES = _GMAIL_READ_SCOPES | {
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/gmail.send",
}
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")
_MESSAGE_ID = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class MailMessage:
    id: str
    labels: tuple[str, ...]
    sender: str
    subject: str
    date: str
    snippet: str
    internal_date: int  # ms since the epoch
    to: str = ACCOUNT_EMAIL

    def headers(self) -> list[dict[str, str]]:
        return [
            {"name": "Delivered-To", "value": self.to},
            {"name": "Date", "value": self.date},
            {"name": "From", "value": self.sender},
            {"name": "To", "value": self.to},
            {"name": "Subject", "value": self.subject},
            {"name": "Message-ID", "value": f"<{self.id}@mail.example>"},
        ]

    @classmethod
    def parse(cls, raw: object) -> MailMessage:
        if not isinstance(raw, dict):
            raise ValueError("a message is an object")
        try:
            return cls(
                id=str(raw["id"]),
                labels=tuple(str(label) for label in raw.get("labels", ("INBOX", "UNREAD"))),
                sender=str(raw.get("sender", "")),
                subject=str(raw.get("subject", "")),
                date=str(raw.get("date", "Mon, 2 Jun 2025 09:00:00 +0000")),
                snippet=str(raw.get("snippet", "")),
                internal_date=int(raw.get("internal_date", 1748854800000)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad message: {exc}") from None


MAILBOX: tuple[MailMessage, ...] = (
    MailMessage(
        id="18f3a1c2d4e5f601",
        labels=("INBOX", "UNREAD", "CATEGORY_PERSONAL", "IMPORTANT"),
        sender='"Ann Smith" <ann.smith@example.com>',
        subject="Lunch on Friday",
        date="Fri, 6 Jun 2025 10:15:00 +0100",
        snippet="Are we still on for lunch at noon? I booked a table at the usual place "
        "&amp; asked for the one by the window.",
        internal_date=1749201300000,
    ),
    MailMessage(
        id="18f3a1c2d4e5f602",
        labels=("INBOX", "CATEGORY_PERSONAL"),
        sender="Bob Jones <bob.jones@example.org>",
        subject="Quarterly report",
        date="Thu, 5 Jun 2025 16:40:00 +0000",
        snippet="Attached is the quarterly report we discussed on Monday.",
        internal_date=1749141600000,
    ),
    MailMessage(
        id="18f3a1c2d4e5f603",
        labels=("INBOX", "UNREAD", "CATEGORY_UPDATES"),
        sender="billing@example.net",
        subject="Your invoice #4521",
        date="Thu, 5 Jun 2025 08:05:00 +0000",
        snippet="Your invoice is ready and due on 30 June. Thank you for being a customer.",
        internal_date=1749110700000,
    ),
    MailMessage(
        id="18f3a1c2d4e5f604",
        labels=("SPAM", "UNREAD"),
        sender='"Prize Department" <win@prizes.example>',
        subject="You have WON!!!",
        date="Wed, 4 Jun 2025 23:59:00 +0000",
        snippet="Claim your prize now by sending your bank details.",
        internal_date=1749081540000,
    ),
    MailMessage(
        id="18f3a1c2d4e5f605",
        labels=("INBOX", "UNREAD", "CATEGORY_PERSONAL"),
        sender="=?UTF-8?Q?Zo=C3=AB_M=C3=BCller?= <zoe@example.de>",
        subject="=?UTF-8?Q?Re:_Holiday_plans_f=C3=BCr_August?=",
        date="Wed, 4 Jun 2025 12:30:00 +0200",
        snippet="Sounds great! I looked at the cabins by the lake and the one with the "
        "big porch is free for the second and third week of August, which would suit "
        "everyone, so shall I book it before somebody else does?",
        internal_date=1749033000000,
    ),
    MailMessage(
        id="18f3a1c2d4e5f606",
        labels=("INBOX",),
        sender="Carol White <carol@example.com>",
        subject="Old newsletter",
        date="Mon, 2 Jun 2025 07:00:00 +0000",
        snippet="This month in the garden: tomatoes, beans and a lot of rain.",
        internal_date=1748847600000,
    ),
)


@dataclass
class GoogleConfig:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    deny_consent: bool = False
    granted_scope: str | None = None
    redirect_uris: list[str] = field(default_factory=list)
    account_email: str = ACCOUNT_EMAIL

    def patched(self, changes: dict[str, Any]) -> GoogleConfig:
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown google setting: {', '.join(unknown)}")
        kinds: dict[str, tuple[type, ...]] = {
            "client_id": (str,),
            "client_secret": (str,),
            "token_lifetime": (int,),
            "deny_consent": (bool,),
            "granted_scope": (str, type(None)),
            "redirect_uris": (list,),
            "account_email": (str,),
        }
        for name, value in changes.items():
            ok = isinstance(value, kinds[name]) and (
                name == "deny_consent" or not isinstance(value, bool)
            )
            if isinstance(value, list):
                ok = ok and all(isinstance(item, str) for item in value)
            if not ok:
                raise ValueError(f"invalid value for {name}: {value!r}")
        updated = replace(self, **changes)
        updated.redirect_uris = list(updated.redirect_uris)
        return updated


@dataclass
class Grant:
    """One consent: what it allows, and its refresh token (offline access only)."""

    client_id: str
    scope: str
    email: str
    refresh_token: str | None
    revoked: bool = False


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    offline: bool
    expires: float
    used: bool = False
    grant: Grant | None = None


@dataclass
class AccessToken:
    grant: Grant
    expires: float
    issued_by: str  # the grant_type that issued it
    expired: bool = False  # expired early through the control API

    def live(self) -> bool:
        return not self.expired and not self.grant.revoked and time.time() < self.expires


@dataclass
class Google:
    """The stub's Google: its client registration, what it issued, and the mailbox."""

    config: GoogleConfig = field(default_factory=GoogleConfig)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    access: dict[str, AccessToken] = field(default_factory=dict)
    mailbox: list[MailMessage] = field(default_factory=lambda: list(MAILBOX))
    log: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.config = GoogleConfig()
        self.codes.clear()
        self.grants.clear()
        self.access.clear()
        self.mailbox = list(MAILBOX)
        self.log.clear()

    def issue(self, grant: Grant, issued_by: str) -> dict[str, Any]:
        token = f"ya29.stub-{secrets.token_urlsafe(32)}"
        lifetime = self.config.token_lifetime
        self.access[token] = AccessToken(grant, time.time() + lifetime, issued_by)
        return {
            "access_token": token,
            "expires_in": lifetime,
            "scope": grant.scope,
            "token_type": "Bearer",
        }

    def grant_of(self, token: str) -> Grant | None:
        if token in self.access:
            return self.access[token].grant
        return next((g for g in self.grants if g.refresh_token == token), None)

    def tokens(self) -> dict[str, Any]:
        return {
            "access_tokens": [
                {
                    "access_token": token,
                    "refresh_token": entry.grant.refresh_token,
                    "issued_by": entry.issued_by,
                    "live": entry.live(),
                }
                for token, entry in self.access.items()
            ],
            "grants": [asdict(grant) for grant in self.grants],
        }


# --------------------------------------------------------------------------- helpers


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _auth_error_page(status: int, error: str, description: str) -> HTMLResponse:
    """Google shows the user an error page (it does not redirect) for a bad request."""
    return HTMLResponse(
        f"<!doctype html><title>Error {status}: {html.escape(error)}</title>"
        f"<h1>Access blocked: authorization error</h1><p>Error {status}: {html.escape(error)}"
        f"</p><p>{html.escape(description)}</p>",
        status_code=status,
    )


_GOOGLE_STATUS = {
    400: ("INVALID_ARGUMENT", "badRequest", "Invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    ),
    403: ("PERMISSION_DENIED", "forbidden", "The caller does not have permission"),
    404: ("NOT_FOUND", "notFound", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded", "Quota exceeded."),
    500: ("INTERNAL", "backendError", "Internal error encountered."),
    503: ("UNAVAILABLE", "backendError", "The service is currently unavailable."),
}


def gmail_error(status: int, message: str | None = None, reason: str | None = None) -> Response:
    """Google's JSON error shape for its REST APIs."""
    api_status, default_reason, default_message = _GOOGLE_STATUS.get(
        status, ("UNKNOWN", "unknown", "Unknown error.")
    )
    text = message or default_message
    error: dict[str, Any] = {
        "code": status,
        "message": text,
        "errors": [{"message": text, "domain": "global", "reason": reason or default_reason}],
        "status": api_status,
    }
    headers = {"Vary": "Origin, X-Origin, Referer"}
    if status == 401:
        error["errors"][0] |= {"location": "Authorization", "locationType": "header"}
        headers["WWW-Authenticate"] = (
            'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        )
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_params(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


def _one(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name)
    return found[0] if found else ""


def _client_credentials(request: Request, form: dict[str, list[str]]) -> tuple[str, str]:
    authorization = request.headers.get("authorization", "")
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    return _one(form, "client_id"), _one(form, "client_secret")


def _matches(message: MailMessage, query: str) -> bool:
    labels = {label.upper() for label in message.labels}
    for term in query.split():
        key, _, value = term.lower().partition(":")
        if value and key == "is":
            wanted = {"unread": "UNREAD" in labels, "read": "UNREAD" not in labels}
            wanted |= {"starred": "STARRED" in labels, "important": "IMPORTANT" in labels}
            if not wanted.get(value, False):
                return False
        elif value and key in ("in", "label"):
            if value != "anywhere" and value.upper() not in labels:
                return False
        elif value and key == "from":
            if value not in message.sender.lower():
                return False
        elif term.lower() not in f"{message.sender} {message.subject} {message.snippet}".lower():
            return False
    return True


# --------------------------------------------------------------------------- the app


def create_app(state: StubState) -> Starlette:
    """Build the Google OAuth + Gmail API app around ``state``."""
    google = Google()

    async def note(request: Request) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        query = parse_qs(request.url.query, keep_blank_values=True)
        body = await request.body()
        form: dict[str, list[str]] = {}
        if body and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        google.log.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": query,
                "form": form,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "time": time.time(),
            }
        )
        return query, form

    # ----------------------------------------------------------------- OAuth

    async def authorize(request: Request) -> Response:
        query, _ = await note(request)
        config = google.config
        client_id = _one(query, "client_id")
        if client_id != config.client_id:
            return _auth_error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = _one(query, "redirect_uri")
        if not redirect_uri:
            return _auth_error_page(
                400, "invalid_request", "Missing required parameter: redirect_uri"
            )
        if urlsplit(redirect_uri).scheme not in ("http", "https") or (
            config.redirect_uris and redirect_uri not in config.redirect_uris
        ):
            return _auth_error_page(
                400,
                "redirect_uri_mismatch",
                f"The redirect URI in the request, {redirect_uri}, does not match the ones "
                "authorized for the OAuth client.",
            )
        response_type = _one(query, "response_type")
        if response_type != "code":
            return _auth_error_page(
                400, "unsupported_response_type", f"Invalid response_type: {response_type}"
            )
        scopes = _one(query, "scope").split()
        if not scopes:
            return _auth_error_page(400, "invalid_request", "Missing required parameter: scope")
        invalid = [s for s in scopes if s not in KNOWN_SCOPES]
        if invalid:
            return _auth_error_page(
                400, "invalid_scope", f"Some requested scopes were invalid. {{invalid={invalid}}}"
            )
        challenge = _one(query, "code_challenge")
        method = _one(query, "code_challenge_method")
        if not challenge or method != "S256":
            return _auth_error_page(
                400,
                "invalid_request",
                "This client must use PKCE: code_challenge with code_challenge_method=S256.",
            )
        if not _CHALLENGE.fullmatch(challenge):
            return _auth_error_page(400, "invalid_request", "Invalid code_challenge.")
        back: dict[str, str] = {}
        state_param = query.get("state")
        if config.deny_consent:
            back["error"] = "access_denied"
            if state_param is not None:
                back["state"] = state_param[0]
            return RedirectResponse(_with_params(redirect_uri, back), status_code=302)
        granted = config.granted_scope if config.granted_scope is not None else " ".join(scopes)
        code = f"4/0Astub-{secrets.token_urlsafe(32)}"
        google.codes[code] = AuthCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            challenge=challenge,
            scope=granted,
            offline=_one(query, "access_type") == "offline",
            expires=time.time() + CODE_LIFETIME,
        )
        if state_param is not None:
            back["state"] = state_param[0]
        back |= {"code": code, "scope": granted, "authuser": "0", "prompt": "consent"}
        return RedirectResponse(_with_params(redirect_uri, back), status_code=302)

    async def token(request: Request) -> Response:
        _, form = await note(request)
        config = google.config
        client_id, client_secret = _client_credentials(request, form)
        if client_id != config.client_id or client_secret != config.client_secret:
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = _one(form, "grant_type")
        if grant_type == "authorization_code":
            return exchange(form, client_id)
        if grant_type == "refresh_token":
            return refresh(form, client_id)
        if not grant_type:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: ")
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def exchange(form: dict[str, list[str]], client_id: str) -> Response:
        code = _one(form, "code")
        if not code:
            return _oauth_error(400, "invalid_request", "Missing required parameter: code")
        entry = google.codes.get(code)
        if entry is None or entry.client_id != client_id:
            return _oauth_error(400, "invalid_grant", "Malformed auth code.")
        if entry.used:
            if entry.grant is not None:  # a replayed code: withdraw what it gave (RFC 6749)
                entry.grant.revoked = True
            return _oauth_error(400, "invalid_grant", "Bad Request")
        if time.time() > entry.expires:
            return _oauth_error(400, "invalid_grant", "Bad Request")
        if _one(form, "redirect_uri") != entry.redirect_uri:
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        verifier = _one(form, "code_verifier")
        if not verifier:
            return _oauth_error(400, "invalid_grant", "Missing code verifier.")
        if not _VERIFIER.fullmatch(verifier) or s256(verifier) != entry.challenge:
            return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        entry.used = True
        refresh_token = f"1//0stub-{secrets.token_urlsafe(48)}" if entry.offline else None
        grant = Grant(
            client_id=client_id,
            scope=entry.scope,
            email=google.config.account_email,
            refresh_token=refresh_token,
        )
        entry.grant = grant
        google.grants.append(grant)
        answer = google.issue(grant, "authorization_code")
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def refresh(form: dict[str, list[str]], client_id: str) -> Response:
        refresh_token = _one(form, "refresh_token")
        if not refresh_token:
            return _oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = next((g for g in google.grants if g.refresh_token == refresh_token), None)
        if grant is None or grant.revoked:
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        if grant.client_id != client_id:
            return _oauth_error(400, "unauthorized_client", "Unauthorized")
        asked = _one(form, "scope").split()
        if asked and not set(asked) <= set(grant.scope.split()):
            return _oauth_error(400, "invalid_scope", "Bad Request")
        answer = google.issue(grant, "refresh_token")
        return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def revoke(request: Request) -> Response:
        query, form = await note(request)
        token_value = _one(form, "token") or _one(query, "token")
        grant = google.grant_of(token_value) if token_value else None
        if grant is None or grant.revoked:
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        grant.revoked = True
        return JSONResponse({})

    # ----------------------------------------------------------------- Gmail

    def bearer(request: Request) -> Grant | Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        entry = google.access.get(value.strip()) if scheme.lower() == "bearer" else None
        if entry is None or not entry.live():
            return gmail_error(401)
        return entry.grant

    def mailbox_user(request: Request, grant: Grant) -> Response | None:
        user_id = request.path_params["user_id"]
        if user_id not in ("me", grant.email):
            return gmail_error(403, f"Delegation denied for {grant.email}")
        if not _GMAIL_READ_SCOPES & set(grant.scope.split()):
            return gmail_error(
                403, "Request had insufficient authentication scopes.", "insufficientPermissions"
            )
        status = state.take_failure()
        return gmail_error(status) if status is not None else None

    async def list_messages(request: Request) -> Response:
        query, _ = await note(request)
        grant = bearer(request)
        if isinstance(grant, Response):
            return grant
        refused = mailbox_user(request, grant)
        if refused is not None:
            return refused
        q = _one(query, "q")
        if q and set(grant.scope.split()) & _GMAIL_READ_SCOPES == {GMAIL_METADATA}:
            return gmail_error(403, "Metadata scope does not support 'q' parameter")
        try:
            limit = int(_one(query, "maxResults") or 100)
            offset = int(_one(query, "pageToken") or 0)
        except ValueError:
            return gmail_error(400, "Invalid value")
        if not 1 <= limit <= 500 or offset < 0:
            return gmail_error(400, "Invalid value")
        wanted = {label.upper() for label in query.get("labelIds", [])}
        spam_trash = _one(query, "includeSpamTrash").lower() == "true"
        found = [
            m
            for m in sorted(google.mailbox, key=lambda m: -m.internal_date)
            if (spam_trash or not {"SPAM", "TRASH"} & set(m.labels))
            and wanted <= set(m.labels)
            and _matches(m, q)
        ]
        page = found[offset : offset + limit]
        body: dict[str, Any] = {}
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.id} for m in page]
        if offset + limit < len(found):
            body["nextPageToken"] = str(offset + limit)
        body["resultSizeEstimate"] = len(found)
        return JSONResponse(body)

    async def get_message(request: Request) -> Response:
        query, _ = await note(request)
        grant = bearer(request)
        if isinstance(grant, Response):
            return grant
        refused = mailbox_user(request, grant)
        if refused is not None:
            return refused
        message_id = request.path_params["message_id"]
        if not _MESSAGE_ID.fullmatch(message_id):
            return gmail_error(400, "Invalid id value")
        message = next((m for m in google.mailbox if m.id == message_id), None)
        if message is None:
            return gmail_error(404)
        form = _one(query, "format") or "full"
        if form not in ("full", "metadata", "minimal", "raw"):
            return gmail_error(400, f"Invalid value at 'format' ({form})")
        body: dict[str, Any] = {
            "id": message.id,
            "threadId": message.id,
            "labelIds": list(message.labels),
            "snippet": message.snippet,
            "sizeEstimate": 2048 + len(message.snippet),
            "historyId": "987654",
            "internalDate": str(message.internal_date),
        }
        if form == "metadata":
            wanted = {name.lower() for name in query.get("metadataHeaders", [])}
            headers = [h for h in message.headers() if not wanted or h["name"].lower() in wanted]
            body["payload"] = {"partId": "", "headers": headers}
        elif form == "full":
            text = base64.urlsafe_b64encode(message.snippet.encode()).decode()
            body["payload"] = {
                "partId": "",
                "mimeType": "text/plain",
                "filename": "",
                "headers": message.headers(),
                "body": {"size": len(message.snippet), "data": text},
            }
        elif form == "raw":
            raw = "\r\n".join(f"{h['name']}: {h['value']}" for h in message.headers())
            body["raw"] = base64.urlsafe_b64encode(f"{raw}\r\n\r\n{message.snippet}".encode())
            body["raw"] = body["raw"].decode()
        return JSONResponse(body)

    async def profile(request: Request) -> Response:
        await note(request)
        grant = bearer(request)
        if isinstance(grant, Response):
            return grant
        refused = mailbox_user(request, grant)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "emailAddress": grant.email,
                "messagesTotal": len(google.mailbox),
                "threadsTotal": len(google.mailbox),
                "historyId": "987654",
            }
        )

    # ----------------------------------------------------------------- control

    async def get_config(request: Request) -> Response:
        return JSONResponse(asdict(google.config))

    async def patch_config(request: Request) -> Response:
        changes = await json_object(request)
        if changes is None:
            return JSONResponse({"error": "config patch must be a JSON object"}, status_code=400)
        try:
            google.config = google.config.patched(changes)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(google.config))

    async def expire(request: Request) -> Response:
        for entry in google.access.values():
            entry.expired = True
        return JSONResponse({"expired": len(google.access)})

    async def revoke_all(request: Request) -> Response:
        for grant in google.grants:
            grant.revoked = True
        return JSONResponse({"revoked": len(google.grants)})

    async def tokens(request: Request) -> Response:
        return JSONResponse(google.tokens())

    async def requests_log(request: Request) -> Response:
        if request.method == "DELETE":
            google.log.clear()
            return Response(status_code=204)
        return JSONResponse(google.log)

    async def mailbox(request: Request) -> Response:
        if request.method == "PUT":
            payload = await json_object(request)
            try:
                if payload is None or not isinstance(payload.get("messages"), list):
                    raise ValueError('send {"messages": [...]}')
                google.mailbox = [MailMessage.parse(m) for m in payload["messages"]]
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"messages": [asdict(m) for m in google.mailbox]})

    async def reset(request: Request) -> Response:
        # Shadows the shared /_stub/reset so one reset clears this stub's Google as well.
        state.reset()
        google.reset()
        return JSONResponse(asdict(state.behaviour))

    return build_app(
        state,
        [
            Route("/o/oauth2/v2/auth", authorize, methods=["GET"]),
            Route("/token", token, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/gmail/v1/users/{user_id}/messages", list_messages, methods=["GET"]),
            Route("/gmail/v1/users/{user_id}/messages/{message_id}", get_message, methods=["GET"]),
            Route("/gmail/v1/users/{user_id}/profile", profile, methods=["GET"]),
            Route("/_stub/reset", reset, methods=["POST"]),
            Route("/_stub/google/config", get_config, methods=["GET"]),
            Route("/_stub/google/config", patch_config, methods=["POST"]),
            Route("/_stub/google/expire", expire, methods=["POST"]),
            Route("/_stub/google/revoke_all", revoke_all, methods=["POST"]),
            Route("/_stub/google/tokens", tokens, methods=["GET"]),
            Route("/_stub/google/requests", requests_log, methods=["GET", "DELETE"]),
            Route("/_stub/google/mailbox", mailbox, methods=["GET", "PUT"]),
        ],
    )
