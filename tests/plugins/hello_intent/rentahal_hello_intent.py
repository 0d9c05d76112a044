"""The 'hello' intent: answers a greeting by name, through the same interface as the
built-in intents."""

from __future__ import annotations

from typing import ClassVar

from rentahal.intents import Answer, Intent, IntentCall, IntentOutcome


class HelloIntent(Intent):
    name = "hello"
    triggers: ClassVar[tuple[str, ...]] = ("hello", "greet")
    keywords: ClassVar[tuple[str, ...]] = ("good morning",)
    description = "greet the user by name"

    async def handle(self, call: IntentCall) -> IntentOutcome:
        who = call.user.nickname or "stranger"
        return Answer(f"Hello, {who}! You said: {call.text or call.utterance}")


class NotAnIntent:
    """Not an `Intent`: its entry point is a packaging mistake the broker must survive."""
