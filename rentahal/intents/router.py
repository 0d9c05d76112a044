"""The intent router: which intent a user's words ask for (SPEC §7).

In order: the intent the message names (the voice menu already chose); a menu word at the
start ("weather in Paris"); a keyword phrase anywhere ("read my email"); then, when a chat
worker is there to ask, a language model's one-word classification, accepted only if it
names an intent this realm has; else chat. Rules run first because they are instant and
certain; the model is for words the rules do not know.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from rentahal.intents.base import Intent
from rentahal.intents.registry import IntentRegistry

Via = Literal["named", "menu", "keyword", "llm", "default"]
AskModel = Callable[[str], Awaitable[str | None]]

DEFAULT_INTENT = "chat"
WAKE_WORD = "computer"  # the voice mode's wake word, often left at the head of a transcript
# Words a classifier may answer that mean "none of them"; the seed's set also had these.
NO_INTENT = frozenset({"null", "none", "unknown", "other"})
_WORD = re.compile(r"[a-z0-9_']+")


class UnknownIntent(LookupError):
    """A message named an intent this realm does not have."""


@dataclass(frozen=True, slots=True)
class Recognized:
    intent: Intent
    prompt: str  # what the intent works on: the words after a menu word, else all of them
    via: Via


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


class IntentRouter:
    def __init__(self, registry: IntentRegistry, default: str = DEFAULT_INTENT) -> None:
        self.registry = registry
        self.default = default
        self._menu = {
            word: intent for intent in registry for word in (intent.name, *intent.triggers)
        }
        # Longest phrase first, so "take a picture" wins over "picture of" style overlaps.
        self._keywords = sorted(
            (
                (" ".join(words(phrase)), intent)
                for intent in registry
                for phrase in intent.keywords
            ),
            key=lambda pair: -len(pair[0]),
        )

    def by_rules(self, text: str) -> Recognized | None:
        """A menu word or keyword phrase; None if the words name no intent."""
        spoken = words(text)
        if spoken[:1] == [WAKE_WORD]:  # "Computer, weather in Paris"
            text, spoken = _after_first_word(text), spoken[1:]
        if not spoken:
            return None
        if (intent := self._menu.get(spoken[0])) is not None:
            return Recognized(intent, _after_first_word(text), "menu")
        padded = f" {' '.join(spoken)} "
        for phrase, intent in self._keywords:
            if f" {phrase} " in padded:
                return Recognized(intent, text.strip(), "keyword")
        return None

    def classification_prompt(self, text: str) -> str:
        """Asks for one word; the intent set and a description of each come from the
        registry, so a plugin's intent can be chosen too."""
        menu = "\n".join(f"- {intent.name}: {intent.description}" for intent in self.registry)
        return (
            "Which one of these intents does the user's request ask for?\n"
            f"{menu}\n- null: none of them\n"
            "Reply with the intent's name only.\n\n"
            f"Request: {text.strip()}\nIntent:"
        )

    def from_answer(self, answer: str) -> Intent | None:
        """The intent a classifier's answer names, if it names one this realm has: the first
        word that is an intent's name or menu word. Anything else (prose, an intent we do not
        have, "null") is no answer."""
        for word in words(answer)[:8]:
            if word in NO_INTENT:
                return None
            if (intent := self._menu.get(word)) is not None:
                return intent
        return None

    async def recognize(
        self, text: str, *, named: str | None = None, ask_model: AskModel | None = None
    ) -> Recognized:
        if named is not None:
            if (intent := self.registry.get(named)) is None:
                raise UnknownIntent(named)
            return Recognized(intent, text.strip(), "named")
        if (recognized := self.by_rules(text)) is not None:
            return recognized
        if ask_model is not None:
            answer = await ask_model(self.classification_prompt(text))
            if answer is not None and (intent := self.from_answer(answer)) is not None:
                return Recognized(intent, text.strip(), "llm")
        default = self.registry.get(self.default)
        if default is None:
            raise UnknownIntent(self.default)
        return Recognized(default, text.strip(), "default")


def _after_first_word(text: str) -> str:
    """The text after its first word, with the punctuation between them dropped
    ("Weather, in Paris?" → "in Paris?")."""
    match = re.match(r"\s*[\w'’]+[\s,.:;!?-]*", text)
    return text[match.end() :].strip() if match else ""
