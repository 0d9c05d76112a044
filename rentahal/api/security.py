"""Browser-facing protections: the Origin rule, the session cookie, security headers."""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rentahal.auth.identity import SESSION_COOKIE
from rentahal.config import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def client_address(connection: HTTPConnection) -> str | None:
    """The address a request or WebSocket came from (its own rate and connection limits).

    uvicorn has already put the forwarded address here when the peer is a trusted proxy
    (`FORWARDED_ALLOW_IPS`, loopback by default) that sent `X-Forwarded-For`."""
    return connection.client.host if connection.client else None


def origin_allowed(headers: Headers, settings: Settings) -> bool:
    """A browser request from another site may not ride on the user's cookie.

    Requests without `Origin` (non-browser clients: the SDK, curl) are allowed; they cannot
    carry a victim's cookie. Same host, or an origin the sysop listed, is allowed.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    origin_key = _origin_of(origin)
    if origin_key is None:
        return False
    host = (headers.get("host") or "").lower()
    if origin_key.split("://", 1)[1] == host:
        return True
    return origin_key in {o.rstrip("/").lower() for o in settings.allowed_origins}


def csrf_safe(method: str, headers: Headers, settings: Settings) -> bool:
    """Unsafe methods authenticated by cookie need a same-origin `Origin` or `Referer`."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return True
    if "origin" in headers:
        return origin_allowed(headers, settings)
    referer = headers.get("referer")
    if referer is None or (origin := _origin_of(referer)) is None:
        return False
    return origin_allowed(Headers({"origin": origin, "host": headers.get("host", "")}), settings)


def session_cookie_header(value: str, settings: Settings, scheme: str) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[SESSION_COOKIE] = value
    morsel = cookie[SESSION_COOKIE]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    morsel["max-age"] = str(settings.token_expiration)
    if scheme in ("https", "wss"):
        morsel["secure"] = True
    return morsel.OutputString()


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response, and the CSP to HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/html") and not scope["path"].startswith("/docs"):
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
