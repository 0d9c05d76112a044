"""The steps of a query. Most queries are one step; a `speech` query is three: transcribe
the user's audio, answer the transcript as a chat query, and (when the user asked for a
spoken answer, `options.speak`) speak the answer. Each step is routed to a worker of its
own type and waits its turn in the fair queue like any query."""

from __future__ import annotations

from rentahal.store import Query

SPEECH_STEPS = ("stt", "chat", "tts")


def steps(query_type: str, options: dict[str, object]) -> tuple[str, ...]:
    if query_type == "speech":
        return SPEECH_STEPS if options.get("speak") else SPEECH_STEPS[:2]
    return (query_type,)


def step_type(query: Query) -> str:
    """The query type of the step `query` is at."""
    return steps(query.query_type, query.options)[query.stage]


def is_last_step(query: Query) -> bool:
    return query.stage >= len(steps(query.query_type, query.options)) - 1


def model_for_step(query_type: str, step: str, model_name: str) -> str:
    """The model a step asks for: the user's `model_name` names the answering model (the
    chat step of a speech query); its transcribing and speaking steps take any."""
    return model_name if step in (query_type, "chat") else ""


def step_model(query: Query) -> str:
    return model_for_step(query.query_type, step_type(query), query.model_name)


def step_prompt(query: Query) -> str:
    """The text the step works on: the prompt (for a speech query, the transcript), except
    that a speech query's speaking step speaks the chat answer."""
    if query.query_type == "speech" and step_type(query) == "tts":
        return query.result or ""
    return query.prompt


def servable(query_type: str, options: dict[str, object], model_name: str) -> list[tuple[str, str]]:
    """(step type, model) for each step, to check that some worker can do every step."""
    return [
        (step, model_for_step(query_type, step, model_name)) for step in steps(query_type, options)
    ]
