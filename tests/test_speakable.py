"""Spoken answers: sentences cut as text streams in, markdown and symbols turned into words,
and the cap on how long an answer is spoken."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rentahal.speech.sentences import SentenceStream, split_sentences
from rentahal.speech.speakable import CODE_NOTE, TABLE_NOTE, capped, speakable
from rentahal.speech.spoken_words import spoken_words

ANSWER = """# Paris today

Dr. Smith says it is 3.5 km to the Louvre, e.g. a short walk... or a taxi! Ready? Go.
1. Take the metro
2. Walk

```python
print("a. b. c")
```
J. R. R. Tolkien liked maps. the U.S. edition is fine."""


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Dr. Who is here. Mr. Bean too.", ["Dr. Who is here.", "Mr. Bean too."]),
        ("Pi is 3.14 roughly. Yes.", ["Pi is 3.14 roughly.", "Yes."]),
        ("Wait... what? No!", ["Wait... what?", "No!"]),
        ("Use e.g. this one. Or i.e. that.", ["Use e.g. this one.", "Or i.e. that."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("It costs approx. ten euros. Fine.", ["It costs approx. ten euros.", "Fine."]),
        ("Visit example.com today. Bye.", ["Visit example.com today.", "Bye."]),
        ("# Title\nBody text", ["# Title", "Body text"]),
        ("- one\n- two\n\n- three", ["- one", "- two", "- three"]),
        ("No ending", ["No ending"]),
        ("", []),
        ("  \n\n ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_a_long_answer_splits_where_a_reader_would() -> None:
    assert split_sentences(ANSWER) == [
        "# Paris today",
        "Dr. Smith says it is 3.5 km to the Louvre, e.g. a short walk... or a taxi!",
        "Ready?",
        "Go.",
        "1. Take the metro",
        "2. Walk",
        '```python\nprint("a. b. c")\n```',
        "J. R. R. Tolkien liked maps. the U.S. edition is fine.",
    ]


def test_a_sentence_is_given_as_soon_as_it_is_certainly_complete() -> None:
    stream = SentenceStream()
    assert stream.feed("It is 3.") == []  # a decimal, perhaps
    assert stream.feed("5 km away. ") == []  # the next word may show an abbreviation
    assert stream.feed("Then") == ["It is 3.5 km away."]
    assert stream.feed(" turn left!\n") == ["Then turn left!"]
    assert stream.feed("```\nx = 1. \n") == []  # a code block is given whole
    assert stream.feed("```\nDone") == ["```\nx = 1. \n```"]
    assert stream.close() == ["Done"]


@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=30))
def test_any_chunking_gives_the_sentences_of_the_whole(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(ANSWER)]
    stream = SentenceStream()
    got = [s for a, b in itertools.pairwise(bounds) for s in stream.feed(ANSWER[a:b])]
    assert got + stream.close() == split_sentences(ANSWER)


@given(
    st.text(alphabet=st.sampled_from("ab .!?…\n\"'`3~-#"), max_size=80),
    st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_any_text_any_chunking_is_the_same_split(text: str, cuts: list[int]) -> None:
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    stream = SentenceStream()
    got = [s for a, b in itertools.pairwise(bounds) for s in stream.feed(text[a:b])]
    whole = split_sentences(text)
    assert got + stream.close() == whole
    assert all(s and s == s.strip() for s in whole)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("It is 3.5 km away.", "It is 3.5 kilometres away."),
        ("It is 20°C, or 68 °F.", "It is 20 degrees Celsius, or 68 degrees Fahrenheit."),
        ("1 km, 1 kg and 2 kg.", "1 kilometre, 1 kilogram and 2 kilograms."),
        ("It costs $5, $1 or £2.50.", "It costs 5 dollars, 1 dollar or 2.50 pounds."),
        ("A $3 million deal, €4bn later.", "A 3 million dollars deal, 4 billion euros later."),
        ("About 1,000 people; 12,345,678 ants.", "About 1000 people; 12345678 ants."),
        ("Pages 10-20.", "Pages 10 to 20."),
        ("On 2024-05-01.", "On 2024-05-01."),
        (
            "Fruit, e.g. apples, i.e. food, etc.",
            "Fruit, for example apples, that is food, et cetera",
        ),
        ("Cats & dogs vs. mice.", "Cats and dogs versus mice."),
        ("See https://example.com/a?b=c. Or www.x.org!", "See a link. Or a link!"),
        ("Mail hal@example.com now 🙂.", "Mail an email address now."),
        (
            "16GB RAM at 3.2 GHz, 50% off, 60 mph.",
            "16 gigabytes RAM at 3.2 gigahertz, 50 percent off, 60 miles per hour.",
        ),
        ("Python 3.11 is out.", "Python 3.11 is out."),
        ("I am a man, m is a letter.", "I am a man, m is a letter."),
    ],
)
def test_spoken_words(text: str, said: str) -> None:
    assert spoken_words(text) == said


def test_markdown_is_said_as_its_words() -> None:
    answer = (
        "## Today\nIt's **20°C** in *Paris*; see [the forecast](https://x.com).\n\n"
        "- Bring a coat\n- Walk `3.5 km`\n\n> Quoted words"
    )
    assert speakable(answer) == (
        "Today. It's 20 degrees Celsius in Paris; see the forecast. Bring a coat. "
        "Walk 3.5 kilometres. Quoted words"
    )


def test_code_and_tables_are_mentioned_once_not_read() -> None:
    answer = (
        "Here:\n\n```python\nprint('hello')\n```\n\nOr:\n\n    indented()\n\n"
        "| City | °C |\n|---|---|\n| Paris | 20 |\n\nThat is all."
    )
    assert speakable(answer) == f"Here. {CODE_NOTE} Or. {TABLE_NOTE} That is all."


def test_pieces_of_a_stream_are_speakable_alone() -> None:
    spoken = [speakable(s) for s in split_sentences(ANSWER)]
    assert spoken[0] == "Paris today"
    assert spoken[4] == "Take the metro"
    assert spoken[6] == CODE_NOTE
    assert speakable("| Paris | 20 |") == ""


def test_the_cap_ends_at_a_sentence() -> None:
    answer = "One two three. Four five six. Seven eight nine. Ten."
    assert speakable(answer, max_sentences=2) == "One two three. Four five six."
    # 165 words a minute: 3 seconds are 8 words, so the third sentence would be one too many.
    assert speakable(answer, max_seconds=3) == "One two three. Four five six."
    assert speakable(answer, max_sentences=10, max_seconds=600) == answer


def test_a_first_sentence_too_long_is_cut_at_a_word() -> None:
    long = "word " * 100 + "end."
    said = capped([long.strip()], None, 2)
    assert said == ["word word word word word."]


@given(st.text(max_size=300), st.integers(1, 5), st.floats(1, 30))
def test_the_cap_holds_for_any_answer(text: str, sentences: int, seconds: float) -> None:
    said = speakable(text, max_sentences=sentences, max_seconds=seconds)
    whole = speakable(text)
    assert len(split_sentences(said)) <= max(sentences, 1) or said == ""
    assert len(said.split()) <= max(int(seconds * 165 / 60), 1) + 1 or not whole
