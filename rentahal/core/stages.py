"""The steps of a query. Most queries are one step; a `speech` query transcribes the user's
audio, then answers the transcript as a chat query. A chat, vision or speech query whose user
asked for a spoken answer (`options.speak`, voice mode) has one more step: speak the answer.
Each step is routed to a worker of its own type and waits its turn in the fair queue like any
query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Staged(Protocol):
    """A query as its steps see it (the store's `Query` is one)."""

    @property
    def query_type(self) -> str: ...
    @property
    def options(self) -> Mapping[str, object]: ...
    @property
    def stage(self) -> int: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def result(self) -> str | None: ...


SPEAKABLE = ("chat", "vision", "speech")  # query types whose text answer can be spoken


def steps(query_type: str, options: Mapping[str, object]) -> tuple[str, ...]:
    answer = ("stt", "chat") if query_type == "speech" else (query_type,)
    return (*answer, "tts") if speaks(query_type, options) else answer


def speaks(query_type: str, options: Mapping[str, object]) -> bool:
    """The query ends by speaking its text answer."""
    return query_type in SPEAKABLE and bool(options.get("speak"))


def step_type(query: Staged) -> str:
    """The query type of the step `query` is at."""
    return steps(query.query_type, query.options)[query.stage]


def is_last_step(query: Staged) -> bool:
    return query.stage >= len(steps(query.query_type, query.options)) - 1


def model_for_step(query_type: str, step: str, model_name: str) -> str:
    """The model a step asks for: the user's `model_name` names the answering model (the
    chat step of a speech query); its transcribing and speaking steps take any."""
    return model_name if step in (query_type, "chat") else ""


def step_model(query: Staged) -> str:
    return model_for_step(query.query_type, step_type(query), query.model_name)


def step_model_type(query: Staged) -> str:
    """The seed `model_type` the step is routed by: like `model_name`, it is about the
    answering model (a `claude` speech query is transcribed and spoken by any worker)."""
    return model_for_step(query.query_type, step_type(query), query.model_type)


def step_prompt(query: Staged) -> str:
    """The text the step works on: the prompt (for a speech query, the transcript), except
    that a spoken answer's last step speaks the answer."""
    if speaks(query.query_type, query.options) and step_type(query) == "tts":
        return query.result or ""
    return query.prompt


def servable(
    query_type: str, options: Mapping[str, object], model_name: str
) -> list[tuple[str, str]]:
    """(step type, model) for each step, to check that some worker can do every step."""
    return [
        (step, model_for_step(query_type, step, model_name)) for step in steps(query_type, options)
    ]
