"""A chat engine that answers with the prompt: protocol tests and wiring checks only.

Chosen only when asked for by name (`--engine echo`), never as a default.
"""

from __future__ import annotations

from pydantic import BaseModel

from rentahal.worker.engines.base import Engine, EngineOptions
from rentahal.worker.protocol import ChatRequest, ChatResponse


class EchoEngine(Engine):
    role = "chat"
    name = "echo"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return True

    def load(self) -> None:
        pass

    @property
    def models(self) -> list[str]:
        return ["echo"]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, ChatRequest)
        return ChatResponse(response=f"echo: {request.prompt}")
