"""Bark for short text, a fast engine for long text: the seed broker's text-to-speech rule.

Bark is slow on a CPU and rambles past the end of long text, so the seed sent a prompt of at
most `WORD_LIMIT` (20) words, split on whitespace, to Bark and anything longer to a fallback
voice. This engine keeps that rule inside one worker: Bark from `--model DIR`, and the best
fast engine installed (piper, else espeak-ng) with its offline default voice, chosen as
`pick` would choose with no model, so the Bark directory is never read as a piper voice.

A request's speaker must be known to the engine its length sends it to: the worker lists the
union of both engines' speakers, and the chosen engine refuses one it does not have.
"""

from __future__ import annotations

from pydantic import BaseModel

from rentahal.worker.engines import EngineOptions, EngineUnavailable, pick
from rentahal.worker.engines.bark import BarkEngine
from rentahal.worker.engines.base import Engine
from rentahal.worker.protocol import TtsRequest

WORD_LIMIT = 20


def fallback(options: EngineOptions) -> Engine:
    """The fast engine for long text (not loaded); `EngineUnavailable` when none is installed."""
    engine = pick("tts", None, EngineOptions(threads=options.threads, slots=options.slots))
    if isinstance(engine, (BarkEngine, TieredTtsEngine)):  # cannot happen without a model
        raise EngineUnavailable("no text-to-speech engine besides Bark is installed")
    return engine


class TieredTtsEngine(Engine):
    role = "tts"
    name = "bark+fallback"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        if not BarkEngine.available(options):
            return False
        try:
            fallback(options)
        except EngineUnavailable:
            return False  # plain Bark is picked instead
        return True

    def load(self) -> None:
        bark = BarkEngine(self.options)
        bark.load()
        fast = fallback(self.options)
        fast.load()
        self._bark, self._fallback = bark, fast

    @property
    def models(self) -> list[str]:
        return [*self._bark.models, *self._fallback.models]

    @property
    def speakers(self) -> list[str]:
        return sorted(set(self._bark.speakers) | set(getattr(self._fallback, "speakers", [])))

    def engine_for(self, prompt: str) -> Engine:
        return self._bark if len(prompt.split()) <= WORD_LIMIT else self._fallback

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, TtsRequest)
        return self.engine_for(request.prompt).run(request)
