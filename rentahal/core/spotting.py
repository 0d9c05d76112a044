"""Spotting the voice mode's wake and command words in a transcript (SPEC §7).

The page streams the microphone to the broker and the realm's STT workers transcribe it, so
no recogniser runs in the browser; the words that drive the voice mode ("Computer", "shut
up", a menu word) are found here, in the text the worker wrote. A transcriber spells the same
spoken words many ways (" Computer." "computer's" "shut-up" "Good bye" "e-mail"), so words
are compared without case, punctuation or the spaces between a phrase's pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol


class Listened(Protocol):
    """What the voice mode listens for of an intent: its name and its menu words."""

    @property
    def name(self) -> str: ...

    @property
    def triggers(self) -> Iterable[str]: ...


# The voice mode's own words: the wake (and submit) word and the seed client's commands.
COMMANDS = ("computer", "backspace", "goodbye", "shut up", "cancel")

# Other words said for a command word, written without spaces.
_ALIASES = {"byebye": "goodbye"}

_POSSESSIVE = re.compile(r"'s\b")
_SEPARATOR = re.compile(r"[\W_]+")  # punctuation, hyphens, underscores: between words


def vocabulary_of(intents: Iterable[Listened]) -> tuple[str, ...]:
    """What the voice mode listens for: its command words and each intent's name and menu
    words (as the `intents` event lists them), so "Computer, weather" spots two words."""
    return (*COMMANDS, *(word for intent in intents for word in (intent.name, *intent.triggers)))


def spot(text: str, vocabulary: Iterable[str]) -> list[str]:
    """The entries of `vocabulary` said in `text` as whole words or phrases, each once, in the
    order they first occur.

    Case and punctuation do not matter, nor how a phrase is split into words ("shut up",
    "shut-up", "shutup"; "back space", "backspace"; "good bye", "goodbye", and "bye bye"
    for "goodbye"), nor a plural or possessive "s" at its end ("computers", "computer's").
    Where the words could be read more than one way, the reading that takes more of them
    wins: "back space" is "backspace", not "back"."""
    entries: dict[str, str] = {}  # an entry without spaces → the entry
    most_words = 0
    for entry in vocabulary:
        words = _words(entry)
        if words:
            entries.setdefault("".join(words), entry)
            most_words = max(most_words, len(words))
    spoken = _words(text)
    found: dict[str, None] = {}  # an ordered set
    at = 0
    while at < len(spoken):
        # A phrase may come in one piece more than its entry has ("e-mail" for "email").
        for pieces in range(min(most_words + 1, len(spoken) - at), 0, -1):
            heard = _entry(entries, "".join(spoken[at : at + pieces]))
            if heard is not None:
                found.setdefault(heard, None)
                at += pieces
                break
        else:
            at += 1
    return list(found)


def _entry(entries: dict[str, str], said: str) -> str | None:
    said = _ALIASES.get(said, said)
    if said in entries:
        return entries[said]
    return entries.get(said[:-1]) if said.endswith("s") else None


def _words(text: str) -> list[str]:
    """Lower case words without punctuation; an apostrophe joins ("don't" → "dont") but a
    possessive "'s" goes ("computer's" → "computer")."""
    text = _POSSESSIVE.sub("", text.lower().replace("\u2019", "'")).replace("'", "")
    return _SEPARATOR.sub(" ", text).split()
