"""A spoken answer is spoken while it is written (issue 19, item 1): each sentence goes to the
realm's TTS worker as soon as the chat worker has finished it, and reaches the owner as
`speech_chunk {query_id, seq, text, audio}`, in order, before the final `query_result`."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from rentahal.client import AsyncClient
from rentahal.speech.speakable import SILENT_NOTE
from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer
from tests.conftest import Realm
from tests.test_rest_stream import read_events

PROMPT = "The first sentence is here. Then **the second** one follows! Is this the third?"
NO_WORDS = "🌍🌍🌍 ✨✨"  # as SmolLM2 once answered "say hello": nothing a voice can say


@pytest_asyncio.fixture(loop_scope="session")
async def voice() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=["tts-1"]) as stub:
        yield stub


async def add_workers(realm: Realm, writer: StubServer, voice: StubServer) -> None:
    await realm.add_worker("writer", writer, models=["gpt-4o-mini"])
    await realm.add_worker("voice", voice, type="tts", models=["tts-1"], max_concurrency=1)


def seconds(audio: str) -> float:
    with wave.open(io.BytesIO(base64.b64decode(audio))) as clip:
        return clip.getnframes() / clip.getframerate()


async def ask_aloud(bus: BusClient, prompt: str) -> str:
    accepted = await bus.request({"type": "chat", "prompt": prompt, "options": {"speak": True}})
    assert accepted["type"] == "query_accepted", accepted
    return str(accepted["query_id"])


def events_of(bus: BusClient, query_id: str) -> list[dict[str, Any]]:
    return [m for m in bus.seen if m.get("query_id") == query_id]


async def take_the_voice(bus: BusClient) -> None:
    """Take the TTS worker's one slot (with a slow voice, for the length of the next answer)."""
    busy = await bus.request({"type": "text_to_speech", "text": "I am busy."})
    await bus.expect(
        "query_status",
        lambda m: m["query_id"] == busy["query_id"] and m["state"] == "dispatched",
    )


async def said(voice: StubServer) -> list[str]:
    return [r["json"]["input"] for r in await voice.requests() if r["path"] == "/v1/audio/speech"]


async def test_each_sentence_is_spoken_as_soon_as_it_is_written(
    realm: Realm, voice: StubServer
) -> None:
    # A word every 0.2 s, as a slow chat worker writes: seconds from the first sentence's
    # end to the last word.
    async with StubServer("openai", models=["gpt-4o-mini"], chunk_delay=0.2) as writer:
        await add_workers(realm, writer, voice)
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            query_id = await ask_aloud(bus, PROMPT)
            result = await bus.expect("query_result", lambda m: m["query_id"] == query_id)
    mine = events_of(bus, query_id)
    chunks = [m for m in mine if m["type"] == "speech_chunk"]
    # Each sentence as speech suits it (no markdown read aloud), in order, said once.
    assert [c["text"] for c in chunks] == [
        "echo: The first sentence is here.",
        "Then the second one follows!",
        "Is this the third?",
    ]
    assert [c["seq"] for c in chunks] == [0, 1, 2]
    assert await said(voice) == [c["text"] for c in chunks]
    # Spoken while written: the first sentence's audio came before the text was complete.
    last_delta = max(i for i, m in enumerate(mine) if m["type"] == "query_chunk")
    assert mine.index(chunks[0]) < last_delta
    assert mine.index(chunks[-1]) < mine.index(result)
    # The result still carries the whole text, and all the audio in one file.
    assert result["result"] == f"echo: {PROMPT}"
    assert abs(seconds(result["audio"]) - sum(seconds(c["audio"]) for c in chunks)) < 0.01
    dispatched = [m["worker"] for m in mine if m.get("state") == "dispatched"]
    assert dispatched == ["writer"]  # no speaking step was queued


async def test_without_a_free_tts_slot_the_answer_is_spoken_by_its_own_step(
    realm: Realm, voice: StubServer
) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"]) as writer:
        await add_workers(realm, writer, voice)
        await voice.configure(latency=1.0)
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            await take_the_voice(bus)
            query_id = await ask_aloud(bus, PROMPT)
            result = await bus.expect(
                "query_result", lambda m: m["query_id"] == query_id, within=20
            )
    mine = events_of(bus, query_id)
    assert not [m for m in mine if m["type"] == "speech_chunk"]
    dispatched = [m["worker"] for m in mine if m.get("state") == "dispatched"]
    assert dispatched == ["writer", "voice"]
    assert seconds(result["audio"]) > 0
    assert (await said(voice))[
        -1
    ] == "echo: The first sentence is here. Then the second one follows! Is this the third?"


async def test_an_answer_with_nothing_to_say_aloud_says_so_as_it_is_written(
    realm: Realm, voice: StubServer
) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"]) as writer:
        await writer.configure(reply=NO_WORDS)
        await add_workers(realm, writer, voice)
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            query_id = await ask_aloud(bus, "Say it in pictures.")
            result = await bus.expect("query_result", lambda m: m["query_id"] == query_id)
    chunks = [m for m in events_of(bus, query_id) if m["type"] == "speech_chunk"]
    assert [c["text"] for c in chunks] == [SILENT_NOTE]
    assert await said(voice) == [SILENT_NOTE]
    assert result["result"] == NO_WORDS and seconds(result["audio"]) > 0


async def test_an_answer_with_nothing_to_say_aloud_says_so_in_its_own_step(
    realm: Realm, voice: StubServer
) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"]) as writer:
        await writer.configure(reply=NO_WORDS)
        await add_workers(realm, writer, voice)
        await voice.configure(latency=1.0)
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            await take_the_voice(bus)
            query_id = await ask_aloud(bus, "Say it in pictures.")
            result = await bus.expect(
                "query_result", lambda m: m["query_id"] == query_id, within=20
            )
    dispatched = [m["worker"] for m in events_of(bus, query_id) if m.get("state") == "dispatched"]
    assert dispatched == ["writer", "voice"]
    assert (await said(voice))[-1] == SILENT_NOTE
    assert result["result"] == NO_WORDS and seconds(result["audio"]) > 0


async def test_a_cancelled_answer_stops_being_spoken(realm: Realm, voice: StubServer) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"], chunk_delay=0.05) as writer:
        await add_workers(realm, writer, voice)
        await voice.configure(latency=0.5)  # each sentence takes a while to say
        async with realm.broker.bus(api_key=realm.sysop_key) as bus:
            query_id = await ask_aloud(bus, PROMPT)
            await bus.expect("speech_chunk", lambda m: m["query_id"] == query_id)
            reply = await bus.request({"type": "cancel_query", "query_id": query_id})
            assert reply["type"] == "ok", reply
            final = await bus.expect("error", lambda m: m.get("query_id") == query_id)
            assert final["code"] == "cancelled"
            asked = len(await said(voice))
            # Nothing more is said for it: a marker query's answer is the next thing said.
            marker = await ask_aloud(bus, "Marker.")
            await bus.expect("query_result", lambda m: m["query_id"] == marker, within=20)
    mine = events_of(bus, query_id)
    assert mine.index(final) == len(mine) - 1  # no chunk after the end
    assert asked <= 2  # the sentence said, and at most the one being said at the cancel
    assert (await said(voice))[asked:] == ["echo: Marker."]


async def test_the_sdk_hands_over_each_sentence_as_it_is_said(
    realm: Realm, voice: StubServer
) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"], chunk_delay=0.05) as writer:
        await add_workers(realm, writer, voice)
        async with AsyncClient(realm.broker.url, realm.sysop_key) as client:
            handle = await client.submit(PROMPT, "chat", options={"speak": True})
            sentences = [sentence async for sentence in handle.speech()]
            result = await handle.result()
    assert [s.seq for s in sentences] == [0, 1, 2]
    assert sentences[1].text == "Then the second one follows!"
    assert all(s.audio[:4] == b"RIFF" for s in sentences)
    assert result.text == f"echo: {PROMPT}" and result.audio is not None


async def test_rest_streams_the_spoken_sentences_too(realm: Realm, voice: StubServer) -> None:
    async with StubServer("openai", models=["gpt-4o-mini"], chunk_delay=0.05) as writer:
        await add_workers(realm, writer, voice)
        owner = {"Authorization": f"Bearer {realm.sysop_key}"}
        async with httpx.AsyncClient(base_url=realm.broker.url, timeout=30) as http:
            accepted = await http.post(
                "/api/v1/queries",
                json={"prompt": PROMPT, "options": {"speak": True}},
                headers=owner,
            )
            query_id = accepted.json()["query_id"]
            async with http.stream(
                "GET", f"/api/v1/queries/{query_id}/events", headers=owner
            ) as response:
                events = await read_events(response)
    kinds = [e["type"] for e in events]
    assert kinds.count("speech_chunk") == 3 and kinds[-1] == "query_result"
    assert [e["seq"] for e in events if e["type"] == "speech_chunk"] == [0, 1, 2]
