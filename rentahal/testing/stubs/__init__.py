"""Stub AI servers speaking the RENT A HAL worker, Ollama and OpenAI HTTP protocols.

Each protocol module exposes ``create_app(state) -> Starlette``; every app also mounts the
``/_stub`` control API from :mod:`rentahal.testing.stubs.state`. Run one as a separate
process with ``python -m rentahal.testing.stubs`` (or :class:`rentahal.testing.process.StubServer`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from starlette.applications import Starlette

from rentahal.testing.stubs import ollama, openai, rentahal_worker
from rentahal.testing.stubs.state import Behaviour, StubState

Protocol = Literal["rentahal", "ollama", "openai"]

APP_FACTORIES: dict[str, Callable[[StubState], Starlette]] = {
    "rentahal": rentahal_worker.create_app,
    "ollama": ollama.create_app,
    "openai": openai.create_app,
}

__all__ = ["APP_FACTORIES", "Behaviour", "Protocol", "StubState"]
