"""What every engine offers the worker app: load once, then run requests of its role.

Engines wrap blocking libraries (CTranslate2, ONNX Runtime, llama.cpp, PyTorch); the app runs
`load` and `run` in threads so `/health` keeps answering while a model loads or works. A chat
engine that can write its answer as it generates it (`streams`) also offers `stream`, which
the worker uses for a `/predict` that asks for `"stream": true`; the others answer such a
request in one piece.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from rentahal.media import BadMedia

# The request is well-formed JSON but cannot be served (not audio, an unknown speaker…):
# to a worker, bad media and other bad input are one thing, a 400 with a code.
BadInput = BadMedia


class EngineUnavailable(Exception):
    """The engine's library or model is not on this machine."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    model: Path | None = None  # a model file or directory; None = the engine's offline default
    threads: int = 0  # 0 = let the library decide
    slots: int = 1  # requests the engine runs at once


# Takes the next piece (text delta) of an answer; False once nobody reads it any more.
Write = Callable[[str], bool]


class Engine(ABC):
    role: ClassVar[str]
    name: ClassVar[str]
    # Whether `stream` is implemented: the answer is written as it is generated.
    streams: ClassVar[bool] = False

    def __init__(self, options: EngineOptions) -> None:
        self.options = options

    @classmethod
    @abstractmethod
    def available(cls, options: EngineOptions) -> bool:
        """Whether it could run here with `options`: its library is installed, and a model
        is given or its offline default is installed."""

    @abstractmethod
    def load(self) -> None:
        """Load the model; blocking, runs in a thread. Raises on a missing or bad model."""

    @property
    @abstractmethod
    def models(self) -> list[str]:
        """The model names this engine answers to (the broker routes by them)."""

    @abstractmethod
    def run(self, request: BaseModel) -> BaseModel:
        """Serve one request of the role's schema; blocking, runs in a thread."""

    def stream(self, request: BaseModel, write: Write) -> None:
        """Serve one chat request, passing its answer to `write` piece by piece, in order, as
        it is generated (the pieces join to the whole answer). Stops generating as soon as
        `write` returns False: the reader has gone and the slot should be freed. Blocking,
        runs in a thread; raises as `run` does. Only engines with `streams` implement it."""
        raise NotImplementedError(f"the {self.name} engine does not stream")
