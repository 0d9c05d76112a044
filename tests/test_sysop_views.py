"""The sysop panel's views (SPEC §8): the running queries and the statistics timeline, sent
with `get_stats` on the bus and served over REST (`/api/v1/queries/running`,
`/api/v1/stats/timeline`), against a real broker and a stub Ollama worker; and the timeline's
bucketing in the store itself, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from rentahal.store import Query, QueryState, Store, User
from rentahal.store.models import INTERNAL_MODEL_TYPE
from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm

LONG_PROMPT = "tell me a long story " * 30  # 630 characters


def chat(prompt: str) -> dict[str, Any]:
    return {"type": "submit_query", "query": {"prompt": prompt, "query_type": "chat"}}


async def submit(bus: BusClient, prompt: str) -> str:
    accepted = await bus.request(chat(prompt))
    assert accepted["type"] == "query_accepted", accepted
    return str(accepted["query_id"])


async def finished(bus: BusClient, query_id: str) -> dict[str, Any]:
    return await bus.expect(
        where=lambda m: m.get("query_id") == query_id and m["type"] in ("query_result", "error")
    )


async def get_stats(realm: Realm) -> dict[str, dict[str, Any]]:
    """The sysop's `get_stats`: every event it brings, by type."""
    async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
        reply = await sysop.request({"type": "get_stats"})
        assert reply["type"] == "system_stats", reply
        return {kind: await sysop.expect(kind) for kind in ("running_queries", "stats_timeline")}


def sysop_http(realm: Realm) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=realm.broker.url, headers={"Authorization": f"Bearer {realm.sysop_key}"}
    )


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --- running queries -----------------------------------------------------------------------


async def test_get_stats_lists_the_unfinished_queries_of_users(
    realm: Realm, ollama_stub: StubServer
) -> None:
    """A guest's running and queued queries, oldest first, with their nickname; the broker's
    own query (the intent router asking the worker to classify words) is left out."""
    await ollama_stub.reset()
    await ollama_stub.configure(latency=60)  # nothing finishes during the test
    await realm.add_worker("slow", ollama_stub, type="chat", max_concurrency=1)
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as guest:
        me = (await guest.expect("user_info"))["data"]
        first = await submit(guest, "first question")
        second = await submit(guest, LONG_PROMPT)
        # Words no rule knows: the router queues an internal query to classify them.
        await guest.send({"type": "intent", "text": "zebra quantum harmonica", "id": "i1"})
        await guest.expect("queue_update", lambda m: m["depth"] == 2)  # second + internal

        async def listed() -> list[dict[str, Any]]:
            return list((await get_stats(realm))["running_queries"]["data"])

        async def first_is_dispatched() -> bool:
            return (await listed())[0]["worker"] == "slow"

        await eventually(first_is_dispatched)
        running = await listed()
        assert [q["query_id"] for q in running] == [first, second]
        assert {q["user_guid"] for q in running} == {me["guid"]}
        assert {q["nickname"] for q in running} == {me["nickname"]}
        assert running[0]["state"] in ("dispatched", "running")
        assert running[0]["prompt"] == "first question"
        assert running[1] | {"created_at": None, "waited": None, "realm": None} == {
            "query_id": second,
            "user_guid": me["guid"],
            "nickname": me["nickname"],
            "query_type": "chat",
            "model_name": "",
            "state": "queued",
            "worker": None,
            "realm": None,
            "prompt": LONG_PROMPT[:200],
            "created_at": None,
            "waited": None,
        }
        assert running[0]["realm"] == running[1]["realm"] != ""
        assert at(running[0]["created_at"]) <= at(running[1]["created_at"])
        assert running[0]["waited"] >= running[1]["waited"] >= 0
        assert isinstance(running[1]["waited"], float)

        async with sysop_http(realm) as http:
            response = await http.get("/api/v1/queries/running")
        assert response.status_code == 200, response.text
        assert [q["query_id"] for q in response.json()] == [first, second]
        assert response.json()[1]["prompt"] == LONG_PROMPT[:200]

        # The panel's terminate button: the guest's jobs end, the classifier's too, so the
        # intent goes on unclassified (and the broker is not left waiting on it).
        async with realm.broker.bus(api_key=realm.sysop_key) as sysop:
            ended = await sysop.request({"type": "terminate_query", "user_guid": me["guid"]})
            assert ended["type"] == "ok", ended
        routed = await guest.expect("intent_result", lambda m: m["response_to"] == "i1")
        assert routed["via"] == "default"


async def test_queue_news_goes_to_everybody_when_a_depth_moves_and_to_sysops_on_a_start(
    realm: Realm, ollama_stub: StubServer
) -> None:
    """`queue_update` on change (SPEC §4): a query that goes straight to a free worker leaves
    every depth as it was, so only the sysops hear of it (their running list follows it)."""
    await ollama_stub.reset()
    await realm.add_worker("quick", ollama_stub, type="chat", max_concurrency=4)
    async with (
        realm.broker.bus(cookie=await realm.broker.guest_cookie()) as guest,
        realm.broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        await guest.expect("user_info")
        await finished(guest, await submit(guest, "first"))
        # The first query made its realm's line: a change, which everybody hears.
        for bus in (guest, sysop):
            await bus.expect("queue_update", lambda m: m["realms"] != {} and m["depth"] == 0)
        guest.inbox.clear()
        sysop.inbox.clear()

        await finished(guest, await submit(guest, "second"))
        await sysop.expect("queue_update", lambda m: m["depth"] == 0)
        # Sent to every connection at once, and before the pong: had the guest been sent it,
        # it would be in the inbox now.
        pong = await guest.request({"type": "ping"})
        assert pong["type"] == "pong", pong
        assert [m for m in guest.inbox if m["type"] == "queue_update"] == []


async def test_an_idle_realm_has_no_running_queries(realm: Realm) -> None:
    stats = await get_stats(realm)
    assert stats["running_queries"]["data"] == []
    timeline = stats["stats_timeline"]["data"]
    assert timeline["by_type"] == timeline["by_worker"] == {}


# --- the timeline --------------------------------------------------------------------------


async def test_the_timeline_counts_finished_queries_in_their_bucket(
    realm: Realm, ollama_stub: StubServer
) -> None:
    """Two chat queries done and one failed, by type and by worker; the latency is the mean
    of the done ones; the intent router's own query is not counted."""
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub, type="chat")
    began = time.time()
    async with realm.broker.bus(cookie=await realm.broker.guest_cookie()) as guest:
        done = [await finished(guest, await submit(guest, "hello"))]
        # Classified by an internal query first (not counted), then asked as a chat query.
        intent = await guest.request({"type": "intent", "text": "zebra quantum harmonica"})
        assert intent["type"] == "intent_result" and intent["via"] == "default", intent
        done.append(await finished(guest, intent["query_id"]))
        await ollama_stub.configure(fail_status=500, fail_count=1)
        failed = await finished(guest, await submit(guest, "this one fails"))
    ended = time.time()
    assert [r["type"] for r in done] == ["query_result", "query_result"]
    assert failed["type"] == "error", failed
    mean = sum(r["processing_time"] for r in done) / 2

    # On the bus: the last hour by the minute; everything is in the last bucket or two.
    timeline = (await get_stats(realm))["stats_timeline"]["data"]
    assert (timeline["bucket_seconds"], timeline["buckets"]) == (60, 60)
    assert began - 3600 - 5 < at(timeline["start"]) < ended - 3600 + 5
    assert set(timeline) == {
        "bucket_seconds",
        "start",
        "buckets",
        "by_type",
        "latency_by_type",
        "by_worker",
        "latency_by_worker",
    }
    assert set(timeline["by_type"]) == {"chat"} and set(timeline["by_worker"]) == {"w1"}
    for series in (*timeline["by_type"].values(), *timeline["latency_by_worker"].values()):
        assert len(series) == 60
    assert sum(timeline["by_type"]["chat"]) == sum(timeline["by_worker"]["w1"]) == 3
    assert sum(timeline["by_type"]["chat"][-2:]) == 3

    async with sysop_http(realm) as http:
        # One bucket for the hour: the mean latency of the two done, not of the failed one.
        whole = (await http.get("/api/v1/stats/timeline?window=3600&bucket=3600")).json()
        # Ten-second buckets: each query is counted in a bucket of the time it ran in.
        fine = await http.get("/api/v1/stats/timeline", params={"window": 600, "bucket": 10})
    assert whole["buckets"] == 1
    assert whole["by_type"] == {"chat": [3]} and whole["by_worker"] == {"w1": [3]}
    assert whole["latency_by_type"]["chat"][0] == pytest.approx(mean, abs=1e-3)
    assert whole["latency_by_worker"]["w1"][0] == pytest.approx(mean, abs=1e-3)
    assert fine.status_code == 200, fine.text
    fine_timeline = fine.json()
    assert fine_timeline["buckets"] == 60 and fine_timeline["bucket_seconds"] == 10
    start = at(fine_timeline["start"])
    counted = 0
    for index, count in enumerate(fine_timeline["by_type"]["chat"]):
        latency = fine_timeline["latency_by_type"]["chat"][index]
        if not count:
            assert latency is None
            continue
        counted += count
        bucket_start, bucket_end = start + 10 * index, start + 10 * (index + 1)
        assert bucket_start <= ended + 1 and bucket_end >= began - 1
    assert counted == 3


async def test_sysop_views_refuse_others_and_check_their_bounds(realm: Realm) -> None:
    guest = {"Cookie": f"rentahal_session={await realm.broker.guest_cookie()}"}
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        for path in ("/api/v1/queries/running", "/api/v1/stats/timeline"):
            refused = await http.get(path, headers=guest)
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"]["code"] == "forbidden"
            assert (await http.get(path)).status_code == 401
    async with realm.broker.bus(cookie=guest["Cookie"].split("=", 1)[1]) as bus:
        refused_bus = await bus.request({"type": "get_stats"})
        assert refused_bus["type"] == "error", refused_bus
        assert not [m for m in bus.seen if m["type"] in ("running_queries", "stats_timeline")]

    async with sysop_http(realm) as http:
        for params in (
            {"window": 59},
            {"window": 86401},
            {"bucket": 9},
            {"bucket": 3601},
            {"window": "an hour"},
        ):
            response = await http.get("/api/v1/stats/timeline", params=params)
            assert response.status_code == 422, (params, response.text)
        too_many = await http.get("/api/v1/stats/timeline?window=86400&bucket=60")
        assert too_many.status_code == 422
        assert too_many.json()["detail"]["code"] == "invalid"
        assert "1440 buckets" in too_many.json()["detail"]["message"]
        widest = await http.get("/api/v1/stats/timeline?window=30000&bucket=60")
        assert widest.status_code == 200 and widest.json()["buckets"] == 500
        # A window that is no whole number of buckets is covered: one bucket more.
        uneven = await http.get("/api/v1/stats/timeline?window=100&bucket=60")
        assert uneven.json()["buckets"] == 2


# --- the store's bucketing, on both databases ----------------------------------------------

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store(database_url).open()
    try:
        yield opened
    finally:
        await opened.close()


async def finish(
    store: Store,
    user: User,
    at_second: float,
    state: QueryState = QueryState.DONE,
    *,
    seconds: float | None = None,
    worker: str | None = "w1",
    query_type: str = "chat",
    model_type: str = "worker_node",
) -> None:
    """A query that ended `at_second` seconds after T0."""
    query = await store.queries.create(
        Query(user_id=user.id, query_type=query_type, prompt="p", model_type=model_type)
    )
    async with store.db.session() as session, session.begin():
        row = await session.get(Query, query.id)
        assert row is not None
        row.state = state.value
        row.worker_name = worker
        row.processing_time = seconds
        row.finished_at = T0 + timedelta(seconds=at_second)


async def test_the_store_buckets_the_timeline_alike_on_both_databases(store: Store) -> None:
    user = await store.users.create(nickname="ann")
    await finish(store, user, -0.5)  # before the window
    await finish(store, user, 0, seconds=1.0)  # the first bucket starts at T0
    await finish(store, user, 59.999, seconds=3.0)
    await finish(store, user, 60, QueryState.FAILED, seconds=100.0)  # no latency: not done
    await finish(store, user, 60.5, QueryState.CANCELLED, worker=None)  # never reached one
    await finish(store, user, 170, QueryState.EXPIRED, worker=None, query_type="imagine")
    await finish(store, user, 179.9, seconds=2.0, worker="w2")
    await finish(store, user, 180, seconds=9.0)  # the window ends at 180: the last bucket
    await finish(store, user, 180.001, seconds=9.0)  # after it
    await finish(store, user, 100, seconds=5.0, model_type=INTERNAL_MODEL_TYPE)
    unfinished = await store.queries.create(Query(user_id=user.id, query_type="chat", prompt="p"))
    assert unfinished.state == QueryState.QUEUED

    timeline = await store.stats.timeline(
        end=T0 + timedelta(seconds=180), bucket_seconds=60, buckets=3
    )
    assert (timeline.start, timeline.bucket_seconds, timeline.buckets) == (T0, 60, 3)
    by_type = {name: (s.counts, s.latencies) for name, s in timeline.by_type.items()}
    assert by_type == {
        "chat": ([2, 2, 2], [2.0, None, 5.5]),
        "imagine": ([0, 0, 1], [None, None, None]),
    }
    by_worker = {name: (s.counts, s.latencies) for name, s in timeline.by_worker.items()}
    assert by_worker == {
        "w1": ([2, 1, 1], [2.0, None, 9.0]),
        "w2": ([0, 0, 1], [None, None, 2.0]),
    }


async def test_the_store_lists_unfinished_queries_without_their_media(store: Store) -> None:
    ann = await store.users.create(nickname="ann")
    bob = await store.users.create(nickname="bob")
    first = await store.queries.create(
        Query(user_id=ann.id, query_type="vision", prompt="x" * 300, image="aW1hZ2U=")
    )
    await store.queries.create(
        Query(user_id=ann.id, query_type="chat", prompt="?", model_type=INTERNAL_MODEL_TYPE)
    )
    done = await store.queries.create(Query(user_id=bob.id, query_type="chat", prompt="done"))
    await store.queries.finish_unsuccessful(
        done, QueryState.FAILED, code="worker_error", message="no"
    )
    last = await store.queries.create(Query(user_id=bob.id, query_type="chat", prompt="last"))
    await store.queries.mark_dispatched(last, "w1", 1, T0)

    running = await store.queries.running(limit=10, prompt_chars=200)
    assert [(q.id, q.nickname, q.state, q.worker_name) for q in running] == [
        (first.id, "ann", "queued", None),
        (last.id, "bob", "dispatched", "w1"),
    ]
    assert running[0].prompt == "x" * 200
    assert not hasattr(running[0], "image")
    assert [q.id for q in await store.queries.running(limit=1, prompt_chars=5)] == [first.id]
