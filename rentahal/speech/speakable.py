"""An answer as it should be spoken: its prose, without what only reads well.

Markdown is parsed (markdown-it-py), not pattern-matched: headings, list items and
paragraphs are said as sentences, emphasis and links as their words; a code block is not read
out (a listener cannot use it) but mentioned once, and a table likewise; an answer with
nothing sayable at all is mentioned too (`SILENT_NOTE`). The words are then
made sayable (`spoken_words`), and a spoken answer is held to the realm's cap
(`spoken_answer_max_sentences`, `spoken_answer_max_seconds`): it ends at a sentence's end,
while the text answer stays whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

from rentahal.speech.sentences import split_sentences
from rentahal.speech.spoken_words import spoken_words

CODE_NOTE = "There is a code example in the text answer."
TABLE_NOTE = "There is a table in the text answer."
# Said for an answer of which no word can be said (only emoji, say): a person who asked aloud
# hears that the answer came, and a TTS worker is never sent nothing to say.
SILENT_NOTE = "There is nothing to read aloud in the text answer."
# A steady TTS voice (piper's default length scale) says about this many words a minute.
WORDS_PER_MINUTE = 165
_PARSER = MarkdownIt("commonmark").enable("table")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")  # a row met alone, as a stream gives it


def speakable(
    text: str, *, max_sentences: int | None = None, max_seconds: float | None = None
) -> str:
    """What to say for the answer `text`: its blocks as sentences in spoken words, cut
    after `max_sentences` or when the next sentence would take past `max_seconds`."""
    blocks = list(_blocks(text))
    # A block ends as a sentence does before the next (a heading, a list item), and the last
    # as it was written.
    ended = [b if b[-1] in ".!?…" else b + "." for b in blocks[:-1]] + blocks[-1:]
    sentences = [s for block in ended for s in split_sentences(spoken_words(block))]
    return " ".join(capped(sentences, max_sentences, max_seconds))


def capped(
    sentences: Sequence[str], max_sentences: int | None, max_seconds: float | None
) -> list[str]:
    """The first sentences that fit the cap. The first is always said, cut at a word's end
    if it alone is too long, so that a spoken answer is never silence."""
    words_allowed = None if max_seconds is None else int(max_seconds * WORDS_PER_MINUTE / 60)
    kept: list[str] = []
    words = 0
    for sentence in sentences[:max_sentences]:
        count = len(sentence.split())
        if words_allowed is not None and words + count > words_allowed:
            if not kept:
                kept.append(" ".join(sentence.split()[: max(words_allowed, 1)]).rstrip(",;:") + ".")
            break
        kept.append(sentence)
        words += count
    return kept


def _blocks(text: str) -> Iterator[str]:
    """The markdown's prose blocks as plain text, and a note for each kind of block that is
    not read out."""
    mentioned: set[str] = set()
    in_table = 0
    for token in _PARSER.parse(text):
        in_table += {"table_open": 1, "table_close": -1}.get(token.type, 0)
        note = _note_for(token)
        if note is not None:
            if note not in mentioned:  # once is enough for a listener
                mentioned.add(note)
                yield note
        elif token.type == "inline" and not in_table:
            plain = _plain(token.children or []).rstrip(":;,")
            if plain and not _TABLE_ROW.match(plain):
                yield plain


def _note_for(token: Token) -> str | None:
    if token.type in ("fence", "code_block"):
        return CODE_NOTE
    if token.type == "table_open":
        return TABLE_NOTE
    return None


def _plain(children: Sequence[Token]) -> str:
    """An inline run's words: text and inline code as they are, a link as its text (a bare
    URL as a link is left to `spoken_words`), images and HTML as nothing."""
    parts = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return re.sub(r"\s+", " ", "".join(parts)).strip()
