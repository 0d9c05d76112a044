"""Voice mode in real headless Chromium, by voice alone.

Chromium's fake microphone plays a WAV that the realm's own TTS worker (piper) speaks at test
time: "Computer" … "Chat" … a question … "Computer". The page cuts the microphone into
utterances, the realm's STT worker (faster-whisper) transcribes them, the broker spots the
command words, and the chat worker's answer is spoken back by the TTS worker. The page's
voice states and what it played are recorded by an init script; nothing in the page is
driven by the test after the "Start voice mode" click.
"""

from __future__ import annotations

import base64
import io
import re
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright, expect

from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.browser import ARTIFACTS, DESKTOP, Recorder, launch
from tests.conftest import FAST_ENV, Realm, create_sysop

# Recorded in the page: each voice state it shows, and each play/pause/end of its audio.
WATCH_PAGE = """
window.__states = [];
window.__audio = [];
for (const name of ["play", "pause"]) {
  const original = HTMLMediaElement.prototype[name];
  HTMLMediaElement.prototype[name] = function (...args) {
    const { src, currentTime: at, duration } = this;
    window.__audio.push({ event: name, src, at, duration });
    if (name === "play" && !this.__watched) {
      this.__watched = true;
      this.addEventListener("ended", () => window.__audio.push({ event: "ended", src: this.src }));
    }
    return original.apply(this, args);
  };
}
document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("voice-state");
  new MutationObserver(() => {
    const now = state.dataset.state;
    if (window.__states.at(-1) !== now) window.__states.push(now);
  }).observe(state, { attributes: true, attributeFilter: ["data-state"] });
});
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def voice_realm(
    tmp_path_factory: pytest.TempPathFactory, ollama_stub: StubServer
) -> AsyncIterator[Realm]:
    """A broker with its local STT and TTS workers, and a stub chat worker that echoes."""
    data_dir: Path = tmp_path_factory.mktemp("voice")
    key = await create_sysop(data_dir)
    env = FAST_ENV | {"RENTAHAL_LOCAL_WORKERS": "stt,tts", "RENTAHAL_LOCAL_WORKER_PORT": "0"}
    async with BrokerProcess(data_dir, env=env) as broker:
        realm = Realm(broker, key)

        async def speech_workers_up() -> bool:
            async with httpx.AsyncClient(base_url=broker.url) as http:
                listed = await http.get(
                    "/api/v1/workers", headers={"Authorization": f"Bearer {key}"}
                )
            health = {w["name"]: w["health_score"] for w in listed.json()}
            return health.get("local-stt") == 100 and health.get("local-tts") == 100

        await eventually(speech_workers_up, within=120, every=0.2)
        await ollama_stub.reset()
        await realm.add_worker("w1", ollama_stub)
        yield realm
    print(f"--- broker output ---\n{broker.output}")


def answering(accepted: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """Matches the events of the query `accepted` names."""
    return lambda message: bool(message.get("query_id") == accepted["query_id"])


async def spoken_script(realm: Realm, script: list[tuple[str, float]], path: Path) -> Path:
    """A WAV of each phrase, spoken by the realm's TTS worker, followed by its seconds of
    silence; a phrase of "" is silence alone."""
    clips: dict[str, bytes] = {}
    params: Any = None
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        for phrase in {phrase for phrase, _ in script if phrase}:
            accepted = await bus.request({"type": "text_to_speech", "text": phrase})
            assert accepted["type"] == "query_accepted", accepted
            spoken = await bus.expect("speech_result", answering(accepted), within=60)
            with wave.open(io.BytesIO(base64.b64decode(spoken["audio"]))) as clip:
                params = clip.getparams()
                clips[phrase] = clip.readframes(clip.getnframes())
    frames = [
        clips.get(phrase, b"") + b"\x00" * params.sampwidth * round(pause * params.framerate)
        for phrase, pause in script
    ]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(params.nchannels)
        out.setsampwidth(params.sampwidth)
        out.setframerate(params.framerate)
        out.writeframes(b"".join(frames))
    return path


@asynccontextmanager
async def voice_page(realm: Realm, wav: Path) -> AsyncIterator[tuple[Page, Recorder]]:
    """The page in Chromium whose microphone plays `wav` once (and whose camera is Chromium's
    test pattern), in a fresh profile, connected."""
    async with async_playwright() as playwright:
        browser = await launch(
            playwright,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        )
        try:
            context = await browser.new_context(
                viewport=DESKTOP, permissions=["microphone", "camera"]
            )
            context.set_default_timeout(20_000)
            await context.add_init_script(WATCH_PAGE)
            page = await context.new_page()
            recorder = Recorder()
            recorder.attach(page)
            await page.goto(f"{realm.broker.url}/")
            await expect(page.locator("#connection")).to_have_text("Connected")
            await expect(page.locator("#voice-modes")).to_contain_text("chat")
            yield page, recorder
        finally:
            await browser.close()


# How the realm's Whisper writes the question down (its punctuation may vary), and the echo.
QUESTION = re.compile(r"^what is the capital of france\??$", re.IGNORECASE)
ANSWER = re.compile(r"^echo: what is the capital of france\??$", re.IGNORECASE)


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` occurs in `seen` in this order (other states may come between)."""
    position = 0
    for state in seen:
        if position < len(wanted) and state == wanted[position]:
            position += 1
    return position == len(wanted)


async def test_computer_chat_question_computer_is_answered_aloud(
    voice_realm: Realm, tmp_path: Path
) -> None:
    wav = await spoken_script(
        voice_realm,
        [
            ("", 4.0),
            ("Computer.", 9.0),  # the page says the menu, then listens
            ("Chat.", 6.0),
            ("What is the capital of France?", 1.5),
            ("Computer.", 30.0),
        ],
        tmp_path / "ask.wav",
    )
    async with voice_page(voice_realm, wav) as (page, recorder):
        await page.get_by_role("button", name="Start voice mode").click()
        await expect(page.locator("#voice-state")).to_have_text("Listening for “Computer”")

        card = page.locator("#results li.result").first
        await expect(card.locator(".prompt")).to_have_text(QUESTION, timeout=60_000)
        await expect(card.locator(".answer")).to_have_text(ANSWER)
        await expect(card.locator(".tag")).to_have_text("chat")
        # The answer came with its speech (the realm's TTS worker), which is played.
        await expect(card.locator("audio")).to_have_count(1)
        await expect(page.locator("#voice-state")).to_have_attribute(
            "data-state", "listening", timeout=60_000
        )
        states = await page.evaluate("window.__states")
        assert in_order(
            states, ["listening", "menu", "dictating", "working", "speaking", "listening"]
        ), states
        audio = await page.evaluate("window.__audio")
        ended = [a for a in audio if a["event"] == "ended"]
        assert len(ended) >= 3, audio  # "Ready…", the menu, "Chat…", and the answer
        await expect(page.locator("#voice-heard")).to_have_text("Computer.", ignore_case=True)
        await page.screenshot(path=ARTIFACTS / "voice-answered.png", full_page=True)
        assert recorder.page_errors == []


async def test_shut_up_stops_the_spoken_answer_at_once(voice_realm: Realm, tmp_path: Path) -> None:
    question = (
        "Tell me the whole history of the Roman Empire, from the founding of the city "
        "to the fall of Constantinople, with every emperor, every war and every great "
        "building they left behind"
    )
    wav = await spoken_script(
        voice_realm,
        [
            ("", 4.0),
            ("Computer, chat.", 6.0),
            (question, 1.5),
            ("Computer.", 9.0),  # the spoken answer (~13 s) has begun, even on a busy machine
            ("Shut up!", 30.0),
        ],
        tmp_path / "shut-up.wav",
    )
    async with voice_page(voice_realm, wav) as (page, _):
        await page.get_by_role("button", name="Start voice mode").click()
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_contain_text(
            "Roman Empire", ignore_case=True, timeout=60_000
        )

        async def stopped_early() -> bool:
            audio = await page.evaluate("window.__audio")
            return any(
                a["event"] == "pause" and a["duration"] and a["at"] < a["duration"] - 1
                for a in audio
            )

        await eventually(stopped_early, within=60, every=0.2)
        await expect(page.locator("#voice-state")).to_have_attribute("data-state", "listening")
        states = await page.evaluate("window.__states")
        assert in_order(states, ["listening", "dictating", "working", "speaking", "listening"])


async def test_vision_by_voice_looks_through_the_camera(
    voice_realm: Realm, ollama_stub: StubServer, tmp_path: Path
) -> None:
    """ "Computer, vision": the page takes a frame from the (fake) camera and the vision
    worker describes it, aloud."""
    await voice_realm.add_worker("eyes", ollama_stub, type="vision", models=["llava"])
    wav = await spoken_script(
        voice_realm, [("", 4.0), ("Computer, vision.", 30.0)], tmp_path / "vision.wav"
    )
    async with voice_page(voice_realm, wav) as (page, _):
        await page.get_by_role("button", name="Start voice mode").click()
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_have_text(
            re.compile(r"^echo: Describe this image in detail\.?$"), timeout=60_000
        )
        await expect(card.locator(".tag")).to_have_text("vision")
        await expect(page.locator("#voice-snapshot")).to_be_visible()
        width = await page.locator("#voice-snapshot").evaluate("(img) => img.naturalWidth")
        assert width > 0
        chats = [r["json"] for r in await ollama_stub.requests() if r["path"] == "/api/chat"]
        assert chats and len(chats[-1]["messages"][-1]["images"]) == 1
        await expect(page.locator("#voice-state")).to_have_attribute(
            "data-state", "listening", timeout=60_000
        )
        states = await page.evaluate("window.__states")
        assert in_order(states, ["listening", "looking", "working", "speaking", "listening"])


async def test_a_recording_is_transcribed_into_the_prompt(
    voice_realm: Realm, tmp_path: Path
) -> None:
    wav = await spoken_script(
        voice_realm,
        [("", 1.0), ("What is the weather in Paris?", 30.0)],
        tmp_path / "record.wav",
    )
    async with voice_page(voice_realm, wav) as (page, _):
        record = page.get_by_role("button", name="Record")
        await record.click()
        await expect(record).to_have_class(re.compile(r"\brecording\b"))
        # The phrase has been played once the recording is four seconds long.
        await expect(record).to_have_text("Stop recording (4 s)", timeout=10_000)
        await record.click()
        await expect(page.get_by_label("Prompt")).to_have_value(
            re.compile(r"what is the weather in paris", re.IGNORECASE), timeout=30_000
        )
        await expect(record).to_have_text("Record")
        await expect(page.locator("#results li")).to_have_count(0)  # dictation, no card


async def test_backspace_erases_a_word_and_goodbye_ends_voice_mode(
    voice_realm: Realm, tmp_path: Path
) -> None:
    wav = await spoken_script(
        voice_realm,
        [
            ("", 4.0),
            ("Computer, chat.", 6.0),
            ("Say hello to the moon", 1.5),
            ("Backspace.", 5.0),
            ("Computer.", 14.0),
            ("Goodbye.", 30.0),
        ],
        tmp_path / "backspace.wav",
    )
    async with voice_page(voice_realm, wav) as (page, _):
        await page.get_by_role("button", name="Start voice mode").click()
        card = page.locator("#results li.result").first
        # "moon" was erased before the prompt went: the chat worker echoes the rest.
        await expect(card.locator(".answer")).to_have_text(
            re.compile(r"^echo: say hello to the\W*$", re.IGNORECASE), timeout=60_000
        )
        await expect(page.locator("#voice-state")).to_have_text("Off", timeout=60_000)
        await expect(page.get_by_role("button", name="Start voice mode")).to_be_visible()
        await expect(page.locator("#results li.notice").first).to_have_text("Goodbye.")


async def test_the_camera_takes_a_picture_for_a_vision_query(
    voice_realm: Realm, ollama_stub: StubServer, tmp_path: Path
) -> None:
    await voice_realm.add_worker("eyes2", ollama_stub, type="vision", models=["llava"])
    wav = await spoken_script(voice_realm, [("Hello.", 1.0)], tmp_path / "hello.wav")
    async with voice_page(voice_realm, wav) as (page, recorder):
        await page.get_by_label("Query type").select_option("vision")
        await page.get_by_role("button", name="Use the camera").click()
        snap = page.get_by_role("button", name="Take picture")
        await expect(snap).to_be_enabled()
        await expect(snap).to_be_focused()
        await snap.click()
        await expect(page.locator("#image-preview")).to_be_visible()
        await expect(page.locator("#camera")).to_be_hidden()
        await page.get_by_role("button", name="Send", exact=True).click()
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_have_text(
            re.compile(r"^echo: Describe this image in detail\.?$")
        )
        assert recorder.page_errors == []
