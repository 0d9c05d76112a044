"""Wake and command word spotting (SPEC §7): `spot()` on transcripts as Whisper writes them,
the broker's vocabulary (command words, intents' names and menu words), and
`speech_to_text {spot: true}` → `transcription_result.spotted` through a real broker with an
STT worker (the OpenAI stub, whose transcript is whatever the test configures)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from rentahal.core.spotting import COMMANDS, spot, vocabulary_of
from rentahal.intents.registry import IntentRegistry
from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm
from tests.media import make_wav

MENU = ("chat", "ask", "vision", "look", "imagine", "weather", "gmail", "email", "mail")
VOCABULARY = (*COMMANDS, *MENU)


@pytest.mark.parametrize(
    ("transcript", "spotted"),
    [
        # As whisper tiny.en writes them: a leading space, capitals, a full stop.
        (" Computer.", ["computer"]),
        ("Chat.", ["chat"]),
        ("What is the capital of France? Computer.", ["computer"]),
        (" Computer, chat.", ["computer", "chat"]),
        ("Weather in Paris, computer!", ["weather", "computer"]),
        # Plural and possessive.
        ("Computers", ["computer"]),
        ("The computer's answer", ["computer"]),
        ("Computer\u2019s", ["computer"]),
        # One spoken phrase, many spellings.
        ("Shut up!", ["shut up"]),
        ("Shut-up.", ["shut up"]),
        ("shutup", ["shut up"]),
        ("Back space.", ["backspace"]),
        ("Backspace", ["backspace"]),
        ("back-space", ["backspace"]),
        ("Good bye.", ["goodbye"]),
        ("Goodbye!", ["goodbye"]),
        ("Bye bye.", ["goodbye"]),
        ("Bye-bye", ["goodbye"]),
        ("Send me an e-mail", ["email"]),
        # Each once, in the order first said.
        ("Cancel. Cancel that, computer, cancel!", ["cancel", "computer"]),
        # Whole words only, and nothing said.
        ("A computerized backspacer", []),
        ("Shut the door, then get up.", []),
        ("Asking about the weatherman", []),
        ("", []),
        (" ... ", []),
    ],
)
def test_spot_finds_the_words_as_transcribers_write_them(
    transcript: str, spotted: list[str]
) -> None:
    assert spot(transcript, VOCABULARY) == spotted


def test_spot_answers_with_the_vocabulary_entries_as_given() -> None:
    vocabulary = ["Shut-Up", "hello_world", "good bye", "goodbye"]
    assert spot("shut up, hello world, goodbye", vocabulary) == [
        "Shut-Up",
        "hello_world",
        "good bye",  # the first entry of the two that are one phrase
    ]
    assert spot("computer", []) == []
    assert spot("computer", ["", "  ", "!"]) == []


def test_the_longer_reading_wins() -> None:
    assert spot("back space", ["back", "backspace"]) == ["backspace"]
    assert spot("good bye", ["good", "goodbye"]) == ["goodbye"]
    assert spot("look, up", ["look", "look up"]) == ["look up"]


def test_the_vocabulary_is_the_commands_and_every_intents_words() -> None:
    registry = IntentRegistry.discover()
    vocabulary = vocabulary_of(registry)
    assert vocabulary[: len(COMMANDS)] == COMMANDS
    for intent in registry:
        assert {intent.name, *intent.triggers} <= set(vocabulary)
    assert set(MENU) <= set(vocabulary)


# --- through the broker --------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ears() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=["whisper-1"]) as stub:
        yield stub


AUDIO = base64.b64encode(make_wav()).decode()


async def transcribe(bus: BusClient, **fields: object) -> dict[str, object]:
    accepted = await bus.request({"type": "speech_to_text", "audio": AUDIO, **fields})
    assert accepted["type"] == "query_accepted", accepted
    return await bus.expect(
        where=lambda m: (
            m.get("query_id") == accepted["query_id"]
            and m["type"] in ("transcription_result", "error")
        ),
        within=20,
    )


async def test_speech_to_text_spots_the_words_when_asked(realm: Realm, ears: StubServer) -> None:
    await ears.reset()
    await realm.add_worker("ears", ears, type="stt", models=["whisper-1"])
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        await ears.configure(reply=" Computer, weather.")
        heard = await transcribe(bus, spot=True)
        assert heard["type"] == "transcription_result", heard
        assert heard["text"] == "Computer, weather."
        assert heard["spotted"] == ["computer", "weather"]  # an intent's name, from the broker
        # Not asked: the field is there, empty.
        assert (await transcribe(bus))["spotted"] == []

        await ears.configure(reply="What is the capital of France? Computer.")
        assert (await transcribe(bus, spot=True, language="en"))["spotted"] == ["computer"]
        await ears.configure(reply="Good bye.")
        assert (await transcribe(bus, spot=True))["spotted"] == ["goodbye"]

        refused = await bus.request({"type": "speech_to_text", "audio": AUDIO, "spot": "maybe"})
        assert refused["type"] == "error" and refused["code"] == "invalid", refused


async def test_a_transcript_finished_while_away_is_spotted_too(
    realm: Realm, ears: StubServer
) -> None:
    """Delivered on reconnect (`BusSession`) and replayed by the REST event stream: the same
    spotted words as live."""
    await ears.reset()
    await realm.add_worker("ears", ears, type="stt", models=["whisper-1"])
    await ears.configure(reply="Shut up, computer!", latency=1.0)
    cookie = await realm.broker.guest_cookie()
    async with realm.broker.bus(cookie=cookie) as bus:
        accepted = await bus.request({"type": "speech_to_text", "audio": AUDIO, "spot": True})
        assert accepted["type"] == "query_accepted", accepted
    query_id = accepted["query_id"]
    headers = {"Cookie": f"rentahal_session={cookie}"}
    async with httpx.AsyncClient(base_url=realm.broker.url, headers=headers) as http:

        async def done() -> bool:
            query = await http.get(f"/api/v1/queries/{query_id}")
            return bool(query.json()["state"] == "done")

        await eventually(done)
        async with realm.broker.bus(cookie=cookie) as bus:
            missed = await bus.expect("transcription_result", lambda m: m["query_id"] == query_id)
            assert missed["spotted"] == ["shut up", "computer"]
        replayed = await http.get(f"/api/v1/queries/{query_id}/events")
        assert '"spotted":["shut up","computer"]' in replayed.text
