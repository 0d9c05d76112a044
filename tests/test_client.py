"""The Python SDK (`rentahal.client`) against a real broker process and stub workers, and
its retry, backoff and circuit breaker logic on their own with a fake clock and sleep."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import sys
import threading
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from rentahal.client import (
    AsyncClient,
    Backoff,
    Banned,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    ConnectionLost,
    Event,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueryCancelled,
    QueryExpired,
    QueryFailed,
    QueryResult,
    RateLimited,
    Refused,
    RentahalError,
    RequestTimeout,
    RetryPolicy,
    ServerError,
    SyncClient,
    Unauthorized,
    endpoints,
    error_from_event,
    retry,
)
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop
from tests.media import make_wav

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("sdk_*.py"))
MODELS = ["gpt-4o-mini", "dall-e-3", "whisper-1", "tts-1"]
WORKERS = {"talker": "chat", "eyes": "vision", "painter": "imagine", "ears": "stt", "voice": "tts"}
FAST_RECONNECT = Backoff(initial=0.05, multiplier=2.0, maximum=0.5)
# The realm's rate limits and quotas are tested in test_limits.py; here they would only
# make the number of queries a test may make depend on the tests before it.
NO_LIMITS = {
    "RENTAHAL_QUERIES_PER_MINUTE_GUEST": "0",
    "RENTAHAL_QUERIES_PER_MINUTE_PER_KEY": "0",
    "RENTAHAL_QUERIES_PER_MINUTE_PER_IP": "0",
    "RENTAHAL_QUERIES_PER_DAY_GUEST": "0",
}


# --- fixtures ------------------------------------------------------------------------------


@dataclass
class SdkRealm:
    """A broker with a worker for every query type (all on one OpenAI-protocol stub), its
    sysop's key, and a plain user's key."""

    broker: BrokerProcess
    stub: StubServer
    sysop_key: str
    user_key: str

    def client(self, key: str | None = None, **options: Any) -> AsyncClient:
        return AsyncClient(self.broker.url, key or self.user_key, **options)


async def user_key(broker: BrokerProcess) -> str:
    """A key of a new, ordinary (non-sysop) user: a browser guest's session asks for one."""
    cookie = await broker.guest_cookie()
    async with httpx.AsyncClient(base_url=broker.url, cookies={"rentahal_session": cookie}) as http:
        made = await http.post(
            "/api/v1/keys",
            json={"name": "sdk-test", "scopes": ["*"]},
            headers={"Origin": broker.url},
        )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sdk_realm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SdkRealm]:
    data_dir = tmp_path_factory.mktemp("sdk")
    sysop_key = await create_sysop(data_dir)
    async with (
        StubServer("openai", models=MODELS, chunk_delay=0.005) as stub,
        BrokerProcess(data_dir, env=FAST_ENV | NO_LIMITS) as broker,
    ):
        realm = Realm(broker, sysop_key)
        for name, kind in WORKERS.items():
            await realm.add_worker(name, stub, type=kind, models=MODELS)
        yield SdkRealm(broker, stub, sysop_key, await user_key(broker))
    print(f"--- broker output ---\n{broker.output}")


@pytest_asyncio.fixture(loop_scope="session")
async def stub(sdk_realm: SdkRealm) -> AsyncIterator[StubServer]:
    """The realm's stub, back to its launch behaviour after the test."""
    await sdk_realm.stub.reset()
    yield sdk_realm.stub
    await sdk_realm.stub.reset()


def png(width: int = 64, height: int = 48, *, noise: bool = False) -> bytes:
    picture = (
        Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        if noise
        else Image.new("RGB", (width, height), (200, 40, 40))
    )
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


# --- queries -------------------------------------------------------------------------------


async def test_chat_answers_and_streams(sdk_realm: SdkRealm, stub: StubServer) -> None:
    async with sdk_realm.client() as client:
        assert client.user is not None and client.user["role"] == "guest"
        assert await client.chat("what is the weather today") == "echo: what is the weather today"

        handle = await client.submit("tell me about the moon")
        pieces = [piece async for piece in handle.stream()]
        result = await handle.result()

    assert len(pieces) > 1 and "".join(pieces) == result.text == "echo: tell me about the moon"
    assert [piece async for piece in handle.stream()] == pieces  # a stream replays from the start
    assert handle.done() and handle.state == "done" and handle.worker == "talker"
    assert result.query_id == handle.query_id and result.result_type == "text"
    assert result.worker == "talker" and result.image is None and result.audio is None
    assert result.cost == pytest.approx(0.01 + 0.001 * result.processing_time, abs=1e-6)
    sent = [r["json"] for r in await stub.requests() if r["path"] == "/v1/chat/completions"]
    assert [m["messages"][0]["content"] for m in sent] == [
        "what is the weather today",
        "tell me about the moon",
    ]


async def test_words_go_to_an_intent(sdk_realm: SdkRealm) -> None:
    async with sdk_realm.client() as client:
        hello = await client.intent("good morning, computer")  # the test plugin's keyword
        assert (hello["intent"], hello["via"]) == ("hello", "keyword")
        assert hello["answer"].endswith("You said: good morning, computer")

        async with client.events("query_result") as results:
            chat = await client.intent("chat: say hi")
            assert (chat["intent"], chat["prompt"], chat["answer"]) == ("chat", "say hi", None)
            answered = await anext(results)
        assert (answered["query_id"], answered["result"]) == (chat["query_id"], "echo: say hi")

        with pytest.raises(NotFound):
            await client.intent("hi", intent="teleport")


async def test_an_unstreamed_answer_streams_as_one_piece(sdk_realm: SdkRealm) -> None:
    async with sdk_realm.client() as client:
        handle = await client.submit("in one go", options={"stream": False})
        assert [piece async for piece in handle.stream()] == ["echo: in one go"]
        assert handle.text_so_far == ""  # no query_chunk came


async def test_many_queries_in_flight_each_get_their_own_answer(sdk_realm: SdkRealm) -> None:
    prompts = [f"question number {n}" for n in range(12)]
    async with sdk_realm.client() as client:
        answers = await asyncio.gather(*(client.chat(p) for p in prompts))
    assert answers == [f"echo: {p}" for p in prompts]


async def test_media_in_and_out(sdk_realm: SdkRealm, stub: StubServer) -> None:
    async with sdk_realm.client() as client:
        picture = await client.imagine("a red barn", model_name="dall-e-3", width=1600, height=900)
        with Image.open(io.BytesIO(picture)) as image:
            assert (image.format, image.size) == ("PNG", (1792, 1024))

        spoken = await client.speak("Hello there")
        assert spoken.startswith(b"RIFF") and wav_seconds(spoken) > 0

        # The stub "hears" the size of what it was sent: half a second at 16 kHz.
        heard = "16044 bytes of wav audio"
        assert await client.transcribe(make_wav(), language="en") == heard
        assert await client.vision("what is this?", png()) == "echo: what is this?"

        answer = await client.speech(make_wav(), speak=True)
        assert answer.transcript == heard and answer.text == f"echo: {heard}"
        assert answer.audio is not None and answer.audio.startswith(b"RIFF")
        # Answered by the chat worker, and spoken as it wrote (no speaking step of its own).
        assert answer.worker == "talker"

    transcriptions = [r for r in await stub.requests() if r["path"] == "/v1/audio/transcriptions"]
    assert transcriptions[0]["form"]["language"] == "en"


async def test_an_image_over_the_message_limit_goes_by_upload(sdk_realm: SdkRealm) -> None:
    big = png(700, 700, noise=True)
    assert len(big) * 4 / 3 > 1_048_576  # as base64 it is over the bus's 1 MiB frame limit
    async with sdk_realm.client() as client:
        handle = await client.submit("what is this noise?", "vision", image=big)
        result = await handle.result()
        assert result.text == "echo: what is this noise?"
        assert handle.state == "done"
        # Without media to upload, a message that big is refused here, not left unanswered.
        with pytest.raises(InvalidRequest, match="too_large"):
            await client.submit("x" * 1_100_000)


async def test_cancel_a_running_query(sdk_realm: SdkRealm, stub: StubServer) -> None:
    await stub.configure(latency=30)
    async with sdk_realm.client() as client:
        handle = await client.submit("take your time")

        async def at_the_worker() -> bool:
            return (await stub.stats())["in_flight"] == 1

        await eventually(at_the_worker)
        assert await handle.cancel() is True
        assert handle.cancelled() and handle.state == "cancelled"
        with pytest.raises(QueryCancelled) as cancelled:
            await handle.result()
        assert cancelled.value.code == "cancelled" and cancelled.value.query_id == handle.query_id

        async def worker_request_closed() -> bool:
            return (await stub.stats())["disconnected"] == 1

        await eventually(worker_request_closed)  # the cancel reached the worker's request

        # A query that already finished stays finished.
        await stub.configure(latency=0)
        done = await client.submit("quick")
        await done.result()
        assert await done.cancel() is False and done.state == "done"


async def test_a_query_no_worker_can_serve_is_refused(sdk_realm: SdkRealm) -> None:
    async with sdk_realm.client() as client:
        with pytest.raises(Refused) as refused:
            await client.chat("hello", model_name="no-such-model")
        assert refused.value.code == "no_worker" and "no-such-model" in refused.value.message
        assert client.breaker is not None and client.breaker.failure_count == 0
        # A sysop command from a plain user: forbidden, and the connection stays usable.
        with pytest.raises(Forbidden) as forbidden:
            await client.request({"type": "get_stats"})
        assert forbidden.value.code == "forbidden"
        assert await client.chat("still here") == "echo: still here"
        # Requests with a direct reply of their own.
        me = await client.set_nickname("sdk_tester")
        assert me["nickname"] == "sdk_tester" and client.user == me
        with pytest.raises(InvalidRequest):
            await client.set_nickname("x")


async def test_an_invalid_key_is_unauthorized_at_once(sdk_realm: SdkRealm) -> None:
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    client = sdk_realm.client("rh_not_a_real_key", retry=RetryPolicy(sleep=sleep))
    with pytest.raises(Unauthorized) as refused:
        await client.connect()
    assert refused.value.code == "unauthorized"
    assert sleeps == []  # a refused key is not retried
    assert not client.connected


async def test_a_banned_user_is_told_and_dropped(sdk_realm: SdkRealm) -> None:
    key = await user_key(sdk_realm.broker)
    async with sdk_realm.client(key) as user, sdk_realm.client(sdk_realm.sysop_key) as sysop:
        assert user.user is not None
        guid = user.user["guid"]
        events = user.events()
        reply = await sysop.request({"type": "ban_user", "user_guid": guid})
        assert reply["type"] == "ok"
        with pytest.raises(Banned):
            async for _ in events:
                pass
        with pytest.raises(Banned):
            await user.chat("hello?")
        await sysop.request({"type": "unban_user", "user_guid": guid})
    async with sdk_realm.client(key) as again:  # unbanned: welcome back
        assert await again.chat("hi again") == "echo: hi again"


async def test_subscribers_see_the_realm(sdk_realm: SdkRealm, stub: StubServer) -> None:
    async with sdk_realm.client() as client, sdk_realm.client(sdk_realm.sysop_key) as sysop:
        greeting = client.latest("worker_update")
        assert greeting is not None
        assert {w["name"] for w in greeting["workers"]} == set(WORKERS)

        queue_updates: list[Event] = []
        got_one = asyncio.Event()

        async def on_queue(event: Event) -> None:
            queue_updates.append(event)
            got_one.set()

        everything: list[str] = []
        client.subscribe("*", lambda event: everything.append(event["type"]))
        unsubscribe = client.subscribe("queue_update", on_queue)
        async with client.events("worker_update", "sysop_message") as events:
            await sysop.request(
                {
                    "type": "add_worker",
                    "worker": {"name": "extra", "address": stub.address, "kind": "openai"},
                }
            )
            await next_event(events, lambda e: "extra" in {w["name"] for w in e["workers"]})
            async with asyncio.timeout(10):  # one more worker: the queue's news changed
                await got_one.wait()
            await sysop.request({"type": "sysop_message", "message": "Maintenance at noon"})
            broadcast = await next_event(events, lambda e: e["type"] == "sysop_message")
            assert broadcast == {"type": "sysop_message", "message": "Maintenance at noon"}
            await sysop.request({"type": "remove_worker", "worker_name": "extra"})
            await next_event(events, lambda e: "extra" not in {w["name"] for w in e["workers"]})
            await client.chat("a query")
        unsubscribe()
        assert queue_updates[0]["total"] == len(WORKERS) + 1 and "depth" in queue_updates[0]
        assert {"worker_update", "sysop_message", "query_result"} <= set(everything)
        assert "ping" not in everything  # answered by the client, not handed on


async def next_event(events: AsyncIterator[Event], where: Callable[[Event], bool]) -> Event:
    """The next event of the stream that satisfies `where` (waiting at most 10 s)."""
    async with asyncio.timeout(10):
        async for event in events:
            if where(event):
                return event
    raise AssertionError("the event stream ended")


# --- reconnecting --------------------------------------------------------------------------


async def test_a_query_survives_a_broker_restart(
    tmp_path: Path, rentahal_stub: StubServer, database_env: dict[str, str]
) -> None:
    """The broker is SIGKILLed while a query runs: the client reconnects by itself, the
    handle gets the result, and a call made while it was away waits for the reconnect."""
    await rentahal_stub.reset()
    sysop_key = await create_sysop(tmp_path, database_url=database_env.get("RENTAHAL_DATABASE_URL"))
    env = database_env | NO_LIMITS | {"RENTAHAL_PING_INTERVAL": "0.1"}
    broker = BrokerProcess(tmp_path, env=env)
    await broker.start()
    try:
        await Realm(broker, sysop_key).add_worker("w1", rentahal_stub, max_concurrency=1)
        key = await user_key(broker)
        async with AsyncClient(broker.url, key, reconnect=FAST_RECONNECT) as client:
            # It answers heartbeats: silent for two intervals, it would have been dropped.
            await eventually(lambda: _true(client.pings_answered >= 5))
            assert client.reconnects == 0

            await rentahal_stub.configure(latency=30)
            handle = await client.submit("survive this")

            async def at_the_worker() -> bool:
                return (await rentahal_stub.stats())["in_flight"] == 1

            await eventually(at_the_worker)
            await broker.kill()
            await eventually(lambda: _true(not client.connected))
            later = asyncio.ensure_future(client.chat("asked while away"))
            await rentahal_stub.configure(latency=0)
            # Back with the usual heartbeat: two missed 0.1 s pings on a loaded machine
            # would drop the client again, and this test counts its reconnects.
            env = database_env | NO_LIMITS
            broker = BrokerProcess(tmp_path, env=env, port=broker.port)
            await broker.start()

            async with asyncio.timeout(20):
                result = await handle.result()
                assert await later == "echo: asked while away"
            assert result.text == "echo: survive this" and result.query_id == handle.query_id
            assert client.reconnects == 1 and client.connected
    finally:
        await broker.stop()


async def test_a_result_lost_in_a_drop_is_fetched_after_reconnecting(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    """The broker counts a result as delivered if any of the user's sockets took it (here
    another tab's), so it is not re-sent when this client reconnects: the client notices
    the finished query and fetches its result."""
    await rentahal_stub.reset()
    await realm.add_worker("solo", rentahal_stub, max_concurrency=1)
    key = await user_key(realm.broker)
    async with (
        realm.broker.bus(api_key=key) as other_tab,
        AsyncClient(realm.broker.url, realm.sysop_key) as sysop,
        AsyncClient(realm.broker.url, key, reconnect=FAST_RECONNECT) as client,
    ):
        await rentahal_stub.configure(latency=30)
        blocker = await sysop.submit("keep the worker busy")

        async def worker_busy() -> bool:
            return (await rentahal_stub.stats())["in_flight"] == 1

        await eventually(worker_busy)
        await rentahal_stub.configure(latency=0)
        handle = await client.submit("answer me while I am away")

        # Drop the client's socket and hold its reconnect until the answer is out.
        connection = client._connection
        assert connection is not None and connection._ws is not None
        gate = asyncio.Event()

        async def held(delay: float) -> None:
            await gate.wait()

        connection._sleep = held
        await connection._ws.close()
        await eventually(lambda: _true(not client.connected))
        assert await blocker.cancel() is True  # the worker is free: the query runs now
        await other_tab.expect("query_result", lambda m: m["query_id"] == handle.query_id)
        assert not handle.done()
        gate.set()

        async with asyncio.timeout(10):
            result = await handle.result()
        assert result.text == "echo: answer me while I am away"
        assert client.reconnects == 1


async def _true(value: bool) -> bool:
    return value


async def test_a_client_that_cannot_reconnect_fails_what_waits(
    sdk_realm: SdkRealm, stub: StubServer
) -> None:
    """With reconnecting off, a dropped socket ends the client: waiting handles and event
    streams fail with ConnectionLost instead of hanging."""
    key = await user_key(sdk_realm.broker)
    async with (
        sdk_realm.client(key, reconnect=None) as client,
        sdk_realm.client(sdk_realm.sysop_key) as sysop,
    ):
        await stub.configure(latency=30)
        handle = await client.submit("never mind")
        events = client.events()
        try:
            # An ordinary drop (not a ban, which is final anyway): the socket closes
            # under the client.
            socket = client._connection._ws if client._connection else None
            assert socket is not None
            await socket.close()
            with pytest.raises(ConnectionLost):
                await handle.result()
            with pytest.raises(ConnectionLost):
                async for _ in events:  # what came before the drop, then the failure
                    pass
            assert not client.connected
            with pytest.raises(ConnectionLost):
                await client.chat("anyone?")
        finally:
            await sysop.request({"type": "terminate_query", "query_id": handle.query_id})


# --- the synchronous client ----------------------------------------------------------------


async def test_sync_client(sdk_realm: SdkRealm) -> None:
    def use() -> None:
        with SyncClient(sdk_realm.broker.url, sdk_realm.user_key) as client:
            assert client.user is not None and client.user["role"] == "guest"
            assert client.chat("hello sync", timeout=20) == "echo: hello sync"
            handle = client.submit("stream in sync")
            assert "".join(handle.stream(timeout=20)) == "echo: stream in sync"
            assert handle.result(timeout=20).text == "echo: stream in sync"
            assert handle.cancel() is False
            spoken = client.speak("Hello", timeout=20)
            assert spoken.startswith(b"RIFF")
            assert client.transcribe(make_wav(), timeout=20).endswith("bytes of wav audio")
            history = client.previous_queries(limit=3)
            assert history[0]["query_type"] == "stt"
            with pytest.raises(Refused):
                client.chat("nobody", model_name="no-such-model")
            results: list[str] = []
            seen = threading.Event()

            def on_result(event: Event) -> None:
                results.append(event["result"])
                seen.set()

            client.subscribe("query_result", on_result)
            assert client.chat("heard by a handler", timeout=20) == "echo: heard by a handler"
            assert seen.wait(10) and results == ["echo: heard by a handler"]
        with pytest.raises(Unauthorized):
            SyncClient(sdk_realm.broker.url, "rh_wrong")
        assert not [t for t in threading.enumerate() if t.name == "rentahal-client"]

    await asyncio.to_thread(use)


# --- the documented examples ---------------------------------------------------------------

EXPECTED_OUTPUT: dict[str, list[str]] = {
    "sdk_chat.py": [
        r"^connected as a guest$",
        r"^answer: echo: What is the capital of France\?$",
        r"^streamed \d+ pieces: echo: Tell me about the moon$",
        r"^by talker in \d+\.\d\d s for 0\.01\d\d$",
    ],
    "sdk_media.py": [
        r"^spoke \d+ bytes of WAV$",
        r"^heard: \d+ bytes of wav audio$",
        r"^painted .*lighthouse\.png$",
        r"^seen: echo: What is in this picture\?$",
        r"^asked: \d+ bytes of wav audio$",
        r"^replied: echo: \d+ bytes of wav audio \(\d+ bytes of audio\)$",
    ],
    "sdk_watch.py": [
        r"^worker talker: chat, health \d+(\.\d+)?$",
        r"^What is a star\? -> echo: What is a star\?$",
        r"^What is a comet\? -> echo: What is a comet\?$",
        r"^event query_status [0-9a-f]{8} running$",
        r"^event query_result [0-9a-f]{8}$",
        r"^queue depths seen: \[",
    ],
    "sdk_sync.py": [
        r"^answer: echo: What is the capital of Italy\?$",
        r"^streamed: echo:\|",
        r"^result: echo: Count to three$",
        r"^latest queries: \['Count to three', 'What is the capital of Italy\?'\]$",
    ],
    "sdk_resilience.py": [
        r"^refused \(no_worker\): no live worker can serve a chat query with 'no-such-model'$",
        r"^answer: echo: Are you there\?$",
        r"^circuit: closed$",
        r"^story: echo: Write a short story$",
        r"^(cancelled: cancelled|finished before the cancel: done)$",
    ],
}


def test_every_example_is_tested() -> None:
    assert [p.name for p in EXAMPLES] == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
async def test_example_runs_against_a_broker(
    sdk_realm: SdkRealm, script: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENTAHAL_")} | {
        "RENTAHAL_URL": sdk_realm.broker.url,
        "RENTAHAL_API_KEY": await user_key(sdk_realm.broker),
        "PYTHONPATH": str(ROOT),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    for pattern in EXPECTED_OUTPUT[script.name]:
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)
    if script.name == "sdk_media.py":
        with Image.open(tmp_path / "lighthouse.png") as picture:
            assert picture.format == "PNG"
        assert wav_seconds((tmp_path / "hello.wav").read_bytes()) > 0


def test_the_guide_shows_every_example_as_it_is() -> None:
    guide = (ROOT / "docs" / "sdk.md").read_text()
    for script in EXAMPLES:
        assert f"docs/examples/{script.name}" in guide
        assert script.read_text().strip() in guide, f"docs/sdk.md has an old {script.name}"


# --- retry and backoff (no real sleeps) ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def failing(times: int, error: BaseException, value: str = "ok") -> Callable[[], Awaitable[str]]:
    """A factory whose first `times` calls fail with `error`; counts its calls."""
    calls = {"n": 0}

    async def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return value

    call.calls = calls  # type: ignore[attr-defined]
    return call


async def test_retry_backs_off_1_2_4_seconds_on_transient_errors() -> None:
    clock = FakeClock()
    factory = failing(3, ConnectionLost("down"))
    assert await retry(factory, sleep=clock.sleep) == "ok"
    assert clock.sleeps == [1.0, 2.0, 4.0]

    clock.sleeps.clear()
    timeouts = failing(9, RequestTimeout("slow"))
    with pytest.raises(RequestTimeout) as gave_up:
        await retry(timeouts, sleep=clock.sleep)
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert timeouts.calls["n"] == 4  # type: ignore[attr-defined]
    assert "gave up after 4 attempts" in gave_up.value.__notes__


async def test_retry_leaves_other_errors_alone() -> None:
    clock = FakeClock()
    refused = failing(1, Refused("no_worker", "nobody"))
    with pytest.raises(Refused):
        await retry(refused, sleep=clock.sleep)
    assert clock.sleeps == [] and refused.calls["n"] == 1  # type: ignore[attr-defined]
    builtin = failing(2, TimeoutError())
    assert await retry(builtin, sleep=clock.sleep, initial_delay=0.5, multiplier=3) == "ok"
    assert clock.sleeps == [0.5, 1.5]


async def test_retry_needs_a_factory_not_a_coroutine() -> None:
    async def once() -> int:
        return 1

    coroutine = once()
    with pytest.raises(TypeError, match="factory"):
        await retry(coroutine)  # type: ignore[arg-type]
    coroutine.close()


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(initial=1.0, multiplier=2.0, maximum=30.0).delays()
    assert [next(delays) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    jittered = Backoff(initial=10.0, jitter=0.1).delays()
    assert all(9.0 <= next(jittered) / 2**n <= 11.0 for n in range(5))
    with pytest.raises(ValueError):
        Backoff(multiplier=0.5)


# --- the circuit breaker (fake clock) ------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=60, clock=clock)
    down = failing(100, ConnectionLost("down"))
    for _ in range(2):
        with pytest.raises(ConnectionLost):
            await breaker.call(down)
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 2
    # A success while closed forgets the failures (the guide's breaker never did).
    assert await breaker.call(failing(0, ConnectionLost())) == "ok"
    assert breaker.failure_count == 0
    for _ in range(2):
        with pytest.raises(ConnectionLost):
            await breaker.call(down)
    assert breaker.state is CircuitState.CLOSED
    # Mistakes of the caller are answers from a working service: they do not count.
    with pytest.raises(InvalidRequest):
        await breaker.call(failing(1, InvalidRequest("invalid", "bad field")))
    assert breaker.failure_count == 0
    for _ in range(3):
        with pytest.raises(ConnectionLost):
            await breaker.call(down)
    assert breaker.state is CircuitState.OPEN


async def test_breaker_refuses_while_open_then_lets_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60, clock=clock)
    with pytest.raises(QueryFailed):
        await breaker.call(failing(1, QueryFailed("worker_error", "boom", query_id="q")))
    assert breaker.state is CircuitState.OPEN

    calls = failing(0, ConnectionLost())
    clock.now += 59
    with pytest.raises(CircuitOpen) as refused:
        await breaker.call(calls)
    assert refused.value.retry_after == pytest.approx(1.0)
    assert calls.calls["n"] == 0  # type: ignore[attr-defined]

    clock.now += 1
    assert breaker.state is CircuitState.HALF_OPEN
    trial_started, finish_trial = asyncio.Event(), asyncio.Event()

    async def slow_trial() -> str:
        trial_started.set()
        await finish_trial.wait()
        raise ConnectionLost("still down")

    trial = asyncio.ensure_future(breaker.call(slow_trial))
    await trial_started.wait()
    with pytest.raises(CircuitOpen):  # half-open: one trial at a time
        await breaker.call(calls)
    finish_trial.set()
    with pytest.raises(ConnectionLost):
        await trial
    assert breaker.state is CircuitState.OPEN  # the trial failed: open for another minute
    clock.now += 30
    assert breaker.state is CircuitState.OPEN

    clock.now += 30
    assert await breaker.call(calls) == "ok"
    assert breaker.state is CircuitState.CLOSED and breaker.failure_count == 0


async def test_breaker_releases_a_cancelled_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    started = asyncio.Event()

    async def hang() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    trial = asyncio.ensure_future(breaker.call(hang))
    await started.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker.call(failing(0, ConnectionLost())) == "ok"  # the next trial may go


# --- the client's own use of retry and the breaker -------------------------------------------


async def test_the_client_never_resends_what_the_broker_may_have_acted_on() -> None:
    clock = FakeClock()
    client = AsyncClient(
        "http://127.0.0.1:9", "key", retry=RetryPolicy(sleep=clock.sleep), breaker=False
    )
    unsent = failing(2, ConnectionLost("not connected", request_sent=False))
    assert await client._guarded(unsent) == "ok"
    assert clock.sleeps == [1.0, 2.0]

    clock.sleeps.clear()
    sent = failing(1, ConnectionLost("dropped after sending", request_sent=True))
    with pytest.raises(ConnectionLost):
        await client._guarded(sent)
    assert clock.sleeps == [] and sent.calls["n"] == 1  # type: ignore[attr-defined]
    # Reading history is harmless to repeat.
    history = failing(1, RequestTimeout("slow", request_sent=True))
    assert await client._guarded(history, idempotent=True) == "ok"


async def test_the_clients_breaker_opens_and_stops_calls() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=60, clock=clock)
    client = AsyncClient("ws://127.0.0.1:9/ws", "key", retry=False, breaker=breaker)
    down = failing(10, ServerError("internal", "boom"))
    for _ in range(2):
        with pytest.raises(ServerError):
            await client._guarded(down)
    with pytest.raises(CircuitOpen):
        await client._guarded(down)
    assert down.calls["n"] == 2  # type: ignore[attr-defined]


# --- small pieces --------------------------------------------------------------------------


def test_errors_map_the_broker_codes() -> None:
    refused = error_from_event({"type": "error", "code": "queue_full", "message": "full"})
    assert isinstance(refused, Refused) and refused.code == "queue_full"
    failed = error_from_event({"code": "worker_error", "message": "x", "query_id": "q1"})
    assert type(failed) is QueryFailed and failed.query_id == "q1"
    assert isinstance(error_from_event({"code": "expired", "query_id": "q"}), QueryExpired)
    assert isinstance(error_from_event({"code": "cancelled", "query_id": "q"}), QueryCancelled)
    assert isinstance(error_from_event({"code": "banned"}), Banned)
    assert isinstance(error_from_event({"code": "banned"}), Forbidden)
    assert isinstance(error_from_event({"code": "invalid"}), InvalidRequest)
    limited = error_from_event({"code": "rate_limited", "message": "slow", "retry_after": 2.5})
    assert isinstance(limited, RateLimited) and isinstance(limited, Refused)
    assert limited.retry_after == 2.5
    odd = error_from_event({"code": "something_new", "message": "?", "response_to": "r1"})
    assert type(odd) is RentahalError and odd.response_to == "r1"
    assert str(odd) == "something_new: ?"
    assert isinstance(ConnectionLost(), ConnectionError)
    assert isinstance(RequestTimeout(), TimeoutError)


def test_results_decode_their_media() -> None:
    audio = QueryResult.from_event(
        {"type": "speech_result", "query_id": "q", "audio": base64.b64encode(b"RIFF").decode()},
        worker="voice",
    )
    assert audio.audio == b"RIFF" and audio.result_type == "audio" and audio.worker == "voice"
    image = QueryResult.from_event(
        {
            "type": "query_result",
            "query_id": "q",
            "result": base64.b64encode(b"\x89PNG").decode(),
            "result_type": "image",
            "processing_time": 1.5,
            "cost": 0.0115,
            "worker": "painter",
        }
    )
    assert (image.image, image.text, image.worker, image.cost) == (
        b"\x89PNG",
        "",
        "painter",
        0.0115,
    )
    heard = QueryResult.from_event(
        {"type": "transcription_result", "query_id": "q", "text": "hi", "final": True}
    )
    assert heard.text == "hi" and heard.audio is None
    with pytest.raises(ValueError):
        QueryResult.from_event({"type": "query_status", "query_id": "q"})


def test_endpoints_from_any_broker_url() -> None:
    assert endpoints("http://127.0.0.1:5000") == ("ws://127.0.0.1:5000/ws", "http://127.0.0.1:5000")
    assert endpoints("https://hal.example/") == ("wss://hal.example/ws", "https://hal.example")
    assert endpoints("wss://hal.example/realm/ws") == (
        "wss://hal.example/realm/ws",
        "https://hal.example/realm",
    )
    with pytest.raises(ValueError):
        endpoints("127.0.0.1:5000")


def test_from_env_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RENTAHAL_API_KEY", raising=False)
    with pytest.raises(ValueError, match="RENTAHAL_API_KEY"):
        AsyncClient.from_env()
    monkeypatch.setenv("RENTAHAL_API_KEY", "rh_k")
    monkeypatch.setenv("RENTAHAL_URL", "https://hal.example:8443")
    assert AsyncClient.from_env().ws_url == "wss://hal.example:8443/ws"
