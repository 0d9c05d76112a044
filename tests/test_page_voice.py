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
import json
import math
import re
import wave
from array import array
from collections import Counter
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
from rentahal.testing.voice import steady_speech
from rentahal.testing.waiting import eventually
from tests.browser import ARTIFACTS, DESKTOP, Recorder, launch
from tests.conftest import FAST_ENV, Realm, create_sysop

pytestmark = pytest.mark.offline_models

# Recorded in the page: each voice state it shows; each play/pause/end of its audio, with the
# time (`t`, performance.now()) and the clip's duration; and each message on the bus, in
# (`__received`) and out (`__sent`), with its time.
WATCH_PAGE = """
window.__states = [];
window.__audio = [];
for (const name of ["play", "pause"]) {
  const original = HTMLMediaElement.prototype[name];
  HTMLMediaElement.prototype[name] = function (...args) {
    const { src, currentTime: at, duration } = this;
    window.__audio.push({ event: name, src, at, duration, t: performance.now() });
    if (name === "play" && !this.__watched) {
      this.__watched = true;
      for (const event of ["ended", "playing"]) {
        this.addEventListener(event, () => window.__audio.push({
          event, src: this.src, duration: this.duration, t: performance.now(),
        }));
      }
    }
    return original.apply(this, args);
  };
}
window.__received = [];
window.__sent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.push({ ...JSON.parse(data), t: performance.now() });
  return send.call(this, data);
};
window.WebSocket = class extends WebSocket {
  constructor(...args) {
    super(...args);
    window.__socket = this; // the page's bus: a test may hand it messages (`inject`)
    this.addEventListener("message", (event) => {
      const { type, query_id, seq } = JSON.parse(event.data);
      window.__received.push({ type, query_id, seq, t: performance.now() });
    });
  }
};
document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("voice-state");
  new MutationObserver(() => {
    const now = state.dataset.state;
    if (window.__states.at(-1) !== now) window.__states.push(now);
  }).observe(state, { attributes: true, attributeFilter: ["data-state"] });
});
"""

# A microphone the test speaks into when the page is ready for it (`say`), for turns whose
# timing depends on the machine's speed (a spoken answer begins when synthesis is done, so a
# "Shut up" written into a WAV at a fixed second may come before it). Voice mode's
# getUserMedia gets a Web Audio stream; the camera stays Chromium's fake device.
DRIVEN_MICROPHONE = """
const realGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
let microphone = null;
navigator.mediaDevices.getUserMedia = async (constraints) => {
  if (!constraints.audio || constraints.video) return realGetUserMedia(constraints);
  const context = new AudioContext();
  await context.resume();
  microphone = context.createMediaStreamDestination();
  return microphone.stream;
};
// A device without echo cancellation: the page's own audio reaches its microphone too, at
// `gain` (and the speakers as before).
window.__echo = (gain) => {
  const context = microphone.context;
  const leak = context.createGain();
  leak.gain.value = gain;
  leak.connect(microphone);
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function (...args) {
    if (!this.__echoed) {
      this.__echoed = true;
      const source = context.createMediaElementSource(this);
      source.connect(context.destination);
      source.connect(leak);
    }
    return play.apply(this, args);
  };
};
window.__say = async (base64) => {
  const context = microphone.context;
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const source = context.createBufferSource();
  source.buffer = await context.decodeAudioData(bytes.buffer);
  source.connect(microphone);
  const ended = new Promise((resolve) => { source.onended = resolve; });
  window.__spoke = performance.now();
  source.start();
  await ended;
};
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


async def spoken(realm: Realm, phrases: set[str]) -> dict[str, bytes]:
    """Each phrase as a WAV, spoken by the realm's TTS worker."""
    clips: dict[str, bytes] = {}
    async with realm.broker.bus(api_key=realm.sysop_key) as bus:
        for phrase in phrases:
            accepted = await bus.request(steady_speech(phrase))
            assert accepted["type"] == "query_accepted", accepted
            answer = await bus.expect("speech_result", answering(accepted), within=60)
            clips[phrase] = base64.b64decode(answer["audio"])
    return clips


async def spoken_script(realm: Realm, script: list[tuple[str, float]], path: Path) -> Path:
    """A WAV of each phrase, spoken by the realm's TTS worker, followed by its seconds of
    silence; a phrase of "" is silence alone."""
    clips = await spoken(realm, {phrase for phrase, _ in script if phrase})
    frames: dict[str, bytes] = {}
    for phrase, wav in clips.items():
        with wave.open(io.BytesIO(wav)) as clip:
            params = clip.getparams()
            frames[phrase] = clip.readframes(clip.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        for phrase, pause in script:
            silence = b"\x00" * params.sampwidth * round(pause * params.framerate)
            out.writeframes(frames.get(phrase, b"") + silence)
    return path


async def lines_said(page: Page, count: int) -> None:
    """Wait until the page has said `count` lines to the end."""
    await page.wait_for_function(
        "count => window.__audio.filter((a) => a.event === 'ended').length >= count",
        arg=count,
        timeout=60_000,
    )


async def say(page: Page, clip: bytes) -> None:
    """Speak `clip` into the page's driven microphone; returns once it has been played."""
    await page.evaluate("(audio) => window.__say(audio)", base64.b64encode(clip).decode())


@asynccontextmanager
async def voice_page(realm: Realm, wav: Path | None) -> AsyncIterator[tuple[Page, Recorder]]:
    """The page in Chromium whose microphone plays `wav` once, or with no `wav` is driven by
    `say` (and whose camera is Chromium's test pattern), in a fresh profile, connected."""
    async with async_playwright() as playwright:
        microphone = [f"--use-file-for-fake-audio-capture={wav}%noloop"] if wav else []
        browser = await launch(
            playwright,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            *microphone,
            "--autoplay-policy=no-user-gesture-required",
        )
        try:
            context = await browser.new_context(
                viewport=DESKTOP, permissions=["microphone", "camera"]
            )
            context.set_default_timeout(20_000)
            await context.add_init_script(WATCH_PAGE)
            if wav is None:
                await context.add_init_script(DRIVEN_MICROPHONE)
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


async def test_computer_chat_question_computer_is_answered_aloud(voice_realm: Realm) -> None:
    question = "What is the capital of France?"
    # Whisper tiny.en, hearing a bare "Chat." through the page, writes "Jet." now and then.
    clips = await spoken(voice_realm, {"Computer.", "Chat, please.", question})
    async with voice_page(voice_realm, None) as (page, recorder):
        state = page.locator("#voice-state")
        await page.get_by_role("button", name="Start voice mode").click()
        await expect(state).to_have_text("Listening for “Computer”")
        # Each said when the page is ready for it: speech while it talks is not obeyed.
        await lines_said(page, 1)  # "Ready. Say Computer."
        await say(page, clips["Computer."])
        await lines_said(page, 2)  # the menu
        await expect(state).to_have_attribute("data-state", "menu")
        await say(page, clips["Chat, please."])
        await lines_said(page, 3)  # "Chat. Speak, then say Computer."
        await expect(state).to_have_attribute("data-state", "dictating")
        await say(page, clips[question])
        # A pause, as a person makes: the question is heard on its own, then "Computer".
        await expect(page.locator("#voice-heard")).to_have_text(QUESTION, timeout=30_000)
        await say(page, clips["Computer."])

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


# A question whose echo takes the TTS worker some ten seconds to say.
LONG_QUESTION = (
    "Tell me the whole history of the Roman Empire, from the founding of the city "
    "to the fall of Constantinople, with every emperor, every war and every great "
    "building they left behind"
)


async def ask_by_voice(page: Page, clips: dict[str, bytes], question: str) -> None:
    """Voice mode on, then "Computer, chat." `question` "Computer.", each said when the page
    is ready for it: speech that starts while the page talks is not obeyed."""
    await page.get_by_role("button", name="Start voice mode").click()
    state = page.locator("#voice-state")
    await lines_said(page, 1)  # "Ready. Say Computer."
    await say(page, clips["Computer, chat."])
    await lines_said(page, 2)  # "Chat. Speak, then say Computer."
    await expect(state).to_have_attribute("data-state", "dictating")
    await say(page, clips[question])
    await say(page, clips["Computer."])


def paused_early(audio: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pauses of clips stopped over a second before their end."""
    return [
        a for a in audio if a["event"] == "pause" and a["duration"] and a["at"] < a["duration"] - 1
    ]


async def test_shut_up_stops_the_spoken_answer_at_once(voice_realm: Realm) -> None:
    # Whisper tiny.en hears a bare "Shut up!" as "chat up, chat up…" now and then.
    stop = "Please shut up!"
    clips = await spoken(voice_realm, {"Computer, chat.", LONG_QUESTION, "Computer.", stop})
    async with voice_page(voice_realm, None) as (page, _):
        state = page.locator("#voice-state")
        await ask_by_voice(page, clips, LONG_QUESTION)
        card = page.locator("#results li.result").first
        await expect(card.locator(".answer")).to_contain_text(
            "Roman Empire", ignore_case=True, timeout=60_000
        )
        await expect(state).to_have_attribute("data-state", "speaking", timeout=60_000)
        await say(page, clips[stop])

        async def stopped_early() -> bool:
            return bool(paused_early(await page.evaluate("window.__audio")))

        await eventually(stopped_early, within=30, every=0.2)
        await expect(state).to_have_attribute("data-state", "listening")
        states = await page.evaluate("window.__states")
        assert in_order(states, ["listening", "dictating", "working", "speaking", "listening"])


async def test_vision_by_voice_looks_through_the_camera(
    voice_realm: Realm, ollama_stub: StubServer
) -> None:
    """ "Computer, vision": the page takes a frame from the (fake) camera and the vision
    worker describes it, aloud."""
    await voice_realm.add_worker("eyes", ollama_stub, type="vision", models=["llava"])
    clips = await spoken(voice_realm, {"Computer, vision."})
    async with voice_page(voice_realm, None) as (page, _):
        await page.get_by_role("button", name="Start voice mode").click()
        await lines_said(page, 1)  # "Ready. Say Computer."
        await say(page, clips["Computer, vision."])
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


async def test_backspace_erases_a_word_and_goodbye_ends_voice_mode(voice_realm: Realm) -> None:
    words = "Say hello to the moon"
    clips = await spoken(
        voice_realm, {"Computer, chat.", words, "Backspace.", "Computer.", "Goodbye."}
    )
    async with voice_page(voice_realm, None) as (page, _):
        state = page.locator("#voice-state")
        heard = page.locator("#voice-heard")
        await page.get_by_role("button", name="Start voice mode").click()
        await lines_said(page, 1)  # "Ready. Say Computer."
        await say(page, clips["Computer, chat."])
        await lines_said(page, 2)  # "Chat. Speak, then say Computer."
        await expect(state).to_have_attribute("data-state", "dictating")
        await say(page, clips[words])
        await expect(heard).to_have_text(re.compile(words, re.IGNORECASE), timeout=30_000)
        await say(page, clips["Backspace."])
        await lines_said(page, 3)  # "Erased the last word."
        await say(page, clips["Computer."])
        card = page.locator("#results li.result").first
        # "moon" was erased before the prompt went: the chat worker echoes the rest.
        await expect(card.locator(".answer")).to_have_text(
            re.compile(r"^echo: say hello to the\W*$", re.IGNORECASE), timeout=60_000
        )
        await expect(state).to_have_attribute("data-state", "listening", timeout=60_000)
        await say(page, clips["Goodbye."])
        await expect(state).to_have_text("Off", timeout=60_000)
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


def onset(clip: bytes) -> float:
    """Seconds before `clip` gets as loud as the page's listener counts as speech (RMS 0.01
    over its 32 ms blocks)."""
    with wave.open(io.BytesIO(clip)) as audio:
        rate = audio.getframerate()
        samples = array("h", audio.readframes(audio.getnframes()))
    size = round(rate * 0.032)
    for start in range(0, len(samples) - size, size):
        block = samples[start : start + size]
        if math.sqrt(sum(x * x for x in block) / size) / 32768 > 0.01:
            return start / rate
    raise AssertionError("a silent clip")


async def test_talking_over_the_spoken_answer_interrupts_it(
    voice_realm: Realm, ollama_stub: StubServer
) -> None:
    """Barge-in: "Computer, chat." said while the answer's first sentence is spoken (and the
    rest still written) stops it within 200 ms of the first word, cancels the query, says
    nothing more of it, and is heard as the next utterance: a new chat is dictated."""
    first = "Paris has been the capital of France for a very long time, since the middle ages."
    rest = " ".join(["And there is much more to say about it."] * 4)
    await ollama_stub.configure(reply=f"{first} {rest}", chunk_delay=0.2)
    question = "What is the capital of France?"
    clips = await spoken(voice_realm, {"Computer, chat.", question, "Computer."})
    try:
        async with voice_page(voice_realm, None) as (page, recorder):
            state = page.locator("#voice-state")
            await ask_by_voice(page, clips, question)
            await expect(state).to_have_attribute("data-state", "speaking", timeout=60_000)
            # Speech in the answer's first 0.4 s is not barge-in (voice.js): talk over it later.
            await page.wait_for_timeout(800)
            await say(page, clips["Computer, chat."])
            await expect(state).to_have_attribute("data-state", "dictating", timeout=30_000)
            await lines_said(page, 3)  # "Chat. Speak, then say Computer." again, to its end
            card = page.locator("#results li.result").first
            await expect(card).to_have_class(re.compile(r"\berror\b"))  # cancelled
            await page.wait_for_timeout(2000)  # long enough for a late chunk to be said

            audio = await page.evaluate("window.__audio")
            spoke = await page.evaluate("window.__spoke")
            paused = paused_early(audio)
            assert len(paused) == 1, audio
            stopped_after = paused[0]["t"] - spoke - onset(clips["Computer, chat."]) * 1000
            print(f"barge-in: the answer stopped {stopped_after:.0f} ms after the first word")
            assert stopped_after < 200, audio
            # Nothing more of the answer was said: after it, only the page's "Chat. Speak…".
            after = [a["event"] for a in audio if a["t"] > paused[0]["t"]]
            assert after == ["play", "playing", "ended"], audio

            query_id = await card.get_attribute("data-query-id")
            received = await page.evaluate("window.__received")
            assert not any(
                m["type"] == "query_result" and m["query_id"] == query_id for m in received
            ), "the answer was still being written when it was talked over"
            sent = await page.evaluate("window.__sent")
            cancels = [m for m in sent if m["type"] == "cancel_query"]
            assert [m["query_id"] for m in cancels] == [query_id]
            assert cancels[0]["t"] - paused[0]["t"] < 50  # at once
            states = await page.evaluate("window.__states")
            assert in_order(
                states, ["listening", "dictating", "working", "speaking", "listening", "dictating"]
            ), states
            assert recorder.page_errors == []
    finally:
        await ollama_stub.reset()


async def inject(page: Page, message: dict[str, Any]) -> None:
    """Hand the page's bus `message` as if the broker had sent it."""
    await page.evaluate(
        "(data) => window.__socket.dispatchEvent(new MessageEvent('message', { data }))",
        json.dumps(message),
    )


def seconds_of(clip: bytes) -> float:
    with wave.open(io.BytesIO(clip)) as audio:
        return audio.getnframes() / audio.getframerate()


async def test_speech_chunks_are_said_in_order_once_and_not_again_when_whole(
    voice_realm: Realm,
) -> None:
    """The page's side of `speech_chunk`, outside voice mode with "Speak answers" on: chunks
    out of order wait for their predecessor, a seq had before is dropped, the clips follow
    each other at once, and the whole audio of the final result is not said again (the card
    keeps it for replay)."""
    sentences = ["One.", "This is the second sentence, a longer one.", "And three."]
    whole = "One. This is the second sentence, a longer one. And three. All of it."
    clips = await spoken(voice_realm, {*sentences, whole})
    audio = {phrase: base64.b64encode(clip).decode() for phrase, clip in clips.items()}
    query_id = "spoken-answer-test"
    async with voice_page(voice_realm, None) as (page, recorder):
        await page.get_by_label("Speak answers", exact=True).check()
        await inject(page, {"type": "query_chunk", "query_id": query_id, "delta": "One. "})
        for seq in [1, 0, 0, 1, 2, 2]:
            await inject(
                page,
                {
                    "type": "speech_chunk",
                    "query_id": query_id,
                    "seq": seq,
                    "text": sentences[seq],
                    "audio": audio[sentences[seq]],
                },
            )
        await inject(
            page,
            {
                "type": "query_result",
                "query_id": query_id,
                "result": whole,
                "result_type": "text",
                "audio": audio[whole],
                "is_final": True,
                "processing_time": 1.0,
                "cost": 0,
            },
        )
        card = page.locator("#results li.result").first
        await expect(card.locator("audio")).to_have_count(1)  # the whole answer, for replay
        await lines_said(page, 3)
        await page.wait_for_timeout(1500)  # long enough for a clip too many to begin
        played = [a for a in await page.evaluate("window.__audio") if a["event"] != "pause"]
        ended = [a for a in played if a["event"] == "ended"]
        playing = [a for a in played if a["event"] == "playing"]
        assert [round(a["duration"], 2) for a in playing] == [
            round(seconds_of(clips[s]), 2) for s in sentences
        ], played
        events = Counter(a["event"] for a in played)  # nothing played twice, nor the whole
        assert events == {"play": 3, "playing": 3, "ended": 3}, played
        gaps = [start["t"] - end["t"] for start, end in zip(playing[1:], ended, strict=False)]
        print(f"gaps between chunks: {[round(g) for g in gaps]} ms")
        assert all(gap < 100 for gap in gaps), gaps
        assert recorder.page_errors == []


async def test_a_spoken_answer_begins_before_it_is_written(
    voice_realm: Realm, ollama_stub: StubServer
) -> None:
    """Speak while writing, in voice mode: the broker sends each sentence's audio as it is
    written (`speech_chunk`); the page says the first before the answer is whole, says them
    in order, each once (not the whole audio again), and listens again after the last."""
    reply = (
        "Paris is the capital of France. It lies on the river Seine. "
        "It has been the capital for a very long time."
    )
    await ollama_stub.configure(reply=reply, chunk_delay=0.15)
    question = "What is the capital of France?"
    clips = await spoken(voice_realm, {"Computer, chat.", question, "Computer."})
    try:
        async with voice_page(voice_realm, None) as (page, recorder):
            await ask_by_voice(page, clips, question)
            card = page.locator("#results li.result").first
            await expect(card.locator(".answer")).to_have_text(reply, timeout=60_000)
            await expect(card.locator("audio")).to_have_count(1)  # the whole, for replay
            await expect(page.locator("#voice-state")).to_have_attribute(
                "data-state", "listening", timeout=60_000
            )
            query_id = await card.get_attribute("data-query-id")
            received = [
                m for m in await page.evaluate("window.__received") if m["query_id"] == query_id
            ]
            chunks = [m for m in received if m["type"] == "speech_chunk"]
            whole = next(m["t"] for m in received if m["type"] == "query_result")
            assert [m["seq"] for m in chunks] == list(range(len(chunks))), received
            assert len(chunks) >= 2, received
            audio = await page.evaluate("window.__audio")
            said = [a for a in audio if a["event"] == "playing" and a["t"] >= chunks[0]["t"]]
            print(
                f"first chunk at {chunks[0]['t'] - whole:.0f} ms, first said at "
                f"{said[0]['t'] - whole:.0f} ms from the whole answer"
            )
            assert said[0]["t"] < whole, "the first sentence is said before the answer is whole"
            assert len(said) == len(chunks), audio  # each chunk once, and not the whole again
            states = await page.evaluate("window.__states")
            assert in_order(states, ["dictating", "working", "speaking", "listening"]), states
            assert recorder.page_errors == []
    finally:
        await ollama_stub.reset()


def quieter(clip: bytes, gain: float) -> bytes:
    """`clip` with its samples scaled by `gain`: the page's voice as its microphone hears it."""
    with wave.open(io.BytesIO(clip)) as audio:
        params = audio.getparams()
        samples = array("h", audio.readframes(audio.getnframes()))
    out = io.BytesIO()
    with wave.open(out, "wb") as scaled:
        scaled.setparams(params)
        scaled.writeframes(array("h", (round(x * gain) for x in samples)).tobytes())
    return out.getvalue()


async def test_the_pages_own_voice_heard_back_does_not_interrupt_it(
    voice_realm: Realm, ollama_stub: StubServer
) -> None:
    """On a device without echo cancellation the microphone hears the answer being spoken:
    that must not count as barge-in (voice.js): the answer is said to its end."""
    reply = "Paris is the capital of France. It lies on the river Seine."
    await ollama_stub.configure(reply=reply)
    question = "What is the capital of France?"
    clips = await spoken(voice_realm, {"Computer, chat.", question, "Computer."})
    try:
        async with voice_page(voice_realm, None) as (page, recorder):
            state = page.locator("#voice-state")
            await ask_by_voice(page, clips, question)
            await page.evaluate("window.__echo(0.5)")
            await expect(state).to_have_attribute("data-state", "speaking", timeout=60_000)
            await expect(state).to_have_attribute("data-state", "listening", timeout=30_000)
            audio = await page.evaluate("window.__audio")
            assert paused_early(audio) == [], audio
            sent = await page.evaluate("window.__sent")
            assert not any(m["type"] == "cancel_query" for m in sent), sent
            assert recorder.page_errors == []
    finally:
        await ollama_stub.reset()
