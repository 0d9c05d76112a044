"""Structured logs (console or JSON) that never carry secrets.

Secrets are removed three ways: any key that names a credential is masked, the configured
secret values themselves are replaced wherever they appear in a log line, and so are the
values of URL parameters that carry credentials (`code`, `state`, `appid`, `token`…).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import structlog

from rentahal.config import Settings, secret_field_names

REDACTED = "[redacted]"
_SECRET_KEY_NAMES = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential)", re.IGNORECASE
)
# Credentials in URLs (an access log line of the OAuth callback, a web API's `appid`).
_SECRET_URL_PARAMETERS = re.compile(
    r"([?&](?:code|state|appid|key|api_key|access_token|refresh_token|token|client_secret)=)"
    r"[^&\s\"']+",
    re.IGNORECASE,
)


class SecretRedactor:
    def __init__(self, secret_values: Iterable[str]) -> None:
        self._values = sorted({v for v in secret_values if len(v) >= 6}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._values:
                value = value.replace(secret, REDACTED)
            return _SECRET_URL_PARAMETERS.sub(rf"\1{REDACTED}", value)
        if isinstance(value, dict):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._scrub(v) for v in value)
        return value

    def _field(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and _SECRET_KEY_NAMES.search(key) and value:
            return REDACTED
        return self._scrub(value)

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {key: self._field(key, value) for key, value in event.items()}


def configure_logging(settings: Settings) -> None:
    secrets = [
        getattr(settings, name).get_secret_value()
        for name in secret_field_names()
        if getattr(settings, name) is not None
    ]
    configure(secrets, debug=settings.debug, json_logs=settings.log_json)


def configure(secrets: Iterable[str], *, debug: bool = False, json_logs: bool = False) -> None:
    """Logging for any RENT A HAL process; `secrets` are scrubbed from every line."""
    level = logging.DEBUG if debug else logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        SecretRedactor(secrets),
    ]
    # structlog and the standard library's loggers (uvicorn, alembic) share one handler,
    # so both pass the same redaction on their way out.
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries log a line per request at info: one per query, and no news.
    for noisy in (
        "httpx",
        "httpcore",
        "httpx2",
        "httpcore2",
        "openai",
        "anthropic",
        "aiosqlite",
        "asyncio",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
