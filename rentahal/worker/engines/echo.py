"""A chat engine that answers with the prompt: protocol tests and wiring checks only.

Chosen only when asked for by name (`--engine echo`), never as a default. It streams its
answer word by word (whitespace attached to the word after it, as tokenizers emit it); the
request option `pace` (seconds, at most `MAX_PACE`) puts that long between the words, so a
test can hold a stream open without a model.
"""

from __future__ import annotations

import re
import threading

from pydantic import BaseModel

from rentahal.worker.engines.base import Engine, EngineOptions, Write
from rentahal.worker.protocol import ChatRequest, ChatResponse

MAX_PACE = 1.0


def words(text: str) -> list[str]:
    """`text` in word-sized pieces that join to exactly `text`."""
    return [piece for piece in re.split(r"(?<=\S)(?=\s)", text) if piece]


def pace(request: ChatRequest) -> float:
    value = request.options.get("pace", 0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    return min(max(float(value), 0.0), MAX_PACE)


class EchoEngine(Engine):
    role = "chat"
    name = "echo"
    streams = True

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

    def stream(self, request: BaseModel, write: Write) -> None:
        assert isinstance(request, ChatRequest)
        answer = self.run(request)
        assert isinstance(answer, ChatResponse)
        between = pace(request)
        for index, piece in enumerate(words(answer.response)):
            if index and between:
                threading.Event().wait(between)
            if not write(piece):
                return
