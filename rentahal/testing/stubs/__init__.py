"""Stub servers speaking the RENT A HAL worker, Ollama, OpenAI, SD web UI, Anthropic and
Hugging Face HTTP protocols, and the web APIs intents call (OpenWeatherMap, Google).

Each protocol module exposes ``create_app(state) -> Starlette``; every app also mounts the
``/_stub`` control API from :mod:`rentahal.testing.stubs.state`. Run one as a separate
process with ``python -m rentahal.testing.stubs`` (or :class:`rentahal.testing.process.StubServer`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Literal

from starlette.applications import Starlette

from rentahal.testing.stubs.state import Behaviour, StubState

Protocol = Literal[
    "rentahal", "ollama", "openai", "a1111", "anthropic", "huggingface", "openweathermap", "google"
]


def _factory(module: str) -> Callable[[StubState], Starlette]:
    """The module's `create_app`, imported when a stub of that protocol starts."""

    def create_app(state: StubState) -> Starlette:
        app: Starlette = importlib.import_module(f"{__name__}.{module}").create_app(state)
        return app

    return create_app


APP_FACTORIES: dict[str, Callable[[StubState], Starlette]] = {
    "rentahal": _factory("rentahal_worker"),
    "ollama": _factory("ollama"),
    "openai": _factory("openai"),
    "a1111": _factory("a1111"),
    "anthropic": _factory("anthropic"),
    "huggingface": _factory("huggingface"),
    "openweathermap": _factory("openweathermap"),  # weather intent: One Call 3.0, geocoding
    "google": _factory("google"),  # Gmail intent: Google OAuth 2.0 and the Gmail API
}

__all__ = ["APP_FACTORIES", "Behaviour", "Protocol", "StubState"]
