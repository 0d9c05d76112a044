"""Cutting text into sentences, also while it is still being written.

A spoken answer is synthesized sentence by sentence as the chat worker streams it, so a
sentence is given out as soon as it is certainly complete, and never earlier: "Dr. Smith",
"e.g. this", "3.5 km", "J. R. R. Tolkien", "wait... what" and a numbered list's "1. " are not
ends. A line break ends a sentence (a heading, a list item), and a fenced code block is one
piece, whole. Where the end is not yet certain (a "." that the next character may show to be
an abbreviation's) the stream waits for more text; `split_sentences` of a whole text gives
exactly what a `SentenceStream` fed the same text in any pieces gives.
"""

from __future__ import annotations

import re

# Words that a "." follows without ending the sentence (lowercase, inner dots kept).
ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "cf",
        "fig",
        "no",
        "approx",
        "e.g",
        "i.e",
        "a.k.a",
    ]
)
TERMINALS = ".!?…"
CLOSERS = "\"')]}»”’"
FENCES = ("```", "~~~")
SPACE = " \t"


class SentenceStream:
    """Feed it text as it arrives; it hands back each sentence once it is complete."""

    def __init__(self) -> None:
        self._buffer = ""
        self._at_line_start = True

    def feed(self, piece: str) -> list[str]:
        """The sentences that `piece` completed (stripped, in order; maybe none)."""
        self._buffer += piece
        return self._cut(final=False)

    def close(self) -> list[str]:
        """The rest, once no more text will come."""
        return self._cut(final=True)

    def _cut(self, *, final: bool) -> list[str]:
        sentences = []
        while self._buffer and (end := self._next_end(final)) is not None:
            sentence, self._buffer = self._buffer[:end], self._buffer[end:]
            self._at_line_start = sentence.endswith("\n")
            if sentence.strip():
                sentences.append(sentence.strip())
        return sentences

    def _next_end(self, final: bool) -> int | None:
        """Where the buffer's first sentence ends, or None while that is not yet known."""
        text, n = self._buffer, len(self._buffer)
        if self._at_line_start:
            head = text.lstrip(SPACE)
            if head.startswith(FENCES):
                return _fence_end(text, head[:3], final)
            if not final and "\n" not in head and any(f.startswith(head) for f in FENCES):
                return None  # perhaps the start of a fence
        i = 0
        while i < n:
            char = text[i]
            if char == "\n":
                return i + 1
            if char not in TERMINALS:
                i += 1
                continue
            end = _run_end(text, i)
            if end == n:
                return n if final else None
            if text[end] not in SPACE + "\n" or not self._ends_sentence(text, i, end):
                i = end
                continue
            after = end
            while after < n and text[after] in SPACE:
                after += 1
            if after == n:
                return n if final else None
            if text[i:end].startswith(".") and "!" not in text[i:end] and text[after].islower():
                i = end  # "approx. ten", "the U.S. and"
                continue
            return end
        return n if final else None

    def _ends_sentence(self, text: str, start: int, end: int) -> bool:
        """Whether the terminal run text[start:end], followed by a space, may end a
        sentence: not an ellipsis, an abbreviation, an initial or a list item's number."""
        run = text[start:end].rstrip(CLOSERS)
        if "!" in run or "?" in run:
            return True
        if run != ".":
            return False  # "..." or "…": a pause, not an end
        word_start = start
        while word_start > 0 and (text[word_start - 1].isalnum() or text[word_start - 1] == "."):
            word_start -= 1
        word = text[word_start:start].lower().strip(".")
        if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or "." in word:
            return False
        listed = self._at_line_start and not text[:word_start].strip()
        return not (listed and word.isdigit() and len(word) <= 3)


def _run_end(text: str, start: int) -> int:
    """The end of the run of terminal punctuation at `start` and its closing quotes."""
    end = start
    while end < len(text) and text[end] in TERMINALS:
        end += 1
    while end < len(text) and text[end] in CLOSERS:
        end += 1
    return end


def _fence_end(text: str, marker: str, final: bool) -> int | None:
    """The end of a fenced code block opening the text: after its closing fence's line."""
    closing = re.compile(rf"\n[ \t]*{re.escape(marker)}[^\n]*\n")
    opened = text.find("\n")
    found = closing.search(text, opened) if opened >= 0 else None
    if found is not None:
        return found.end()
    return len(text) if final else None


def split_sentences(text: str) -> list[str]:
    """The sentences of a whole text, as a stream of it would give them."""
    stream = SentenceStream()
    return stream.feed(text) + stream.close()
