"""Rate limits (token buckets per user by role, per API key, per client IP) and daily quotas:
a clear `rate_limited` / `quota_exceeded` refusal with a retry-after on every way in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from rentahal.admission import Admission
from rentahal.auth import Principal
from rentahal.config import load_settings
from rentahal.core.errors import ProtocolError
from rentahal.limits import Limit, RateLimiter, SubmissionWindows, TokenBucket
from rentahal.store import Query, Role, Store, utcnow
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from tests.conftest import FAST_ENV, Realm, create_sysop


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_the_refill_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    six_a_minute = [Limit("user:a", 6)]
    assert [limiter.acquire(six_a_minute) for _ in range(6)] == [0.0] * 6
    assert limiter.acquire(six_a_minute) == pytest.approx(10.0)  # one token per 10 s
    clock.now += 4
    assert limiter.acquire(six_a_minute) == pytest.approx(6.0)
    clock.now += 6
    assert limiter.acquire(six_a_minute) == 0.0
    clock.now += 3600  # refills to the capacity, not beyond
    assert [limiter.acquire(six_a_minute) for _ in range(7)][-2:] == [0.0, pytest.approx(10.0)]


def test_a_request_takes_a_token_from_every_limit_or_from_none() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    user, ip = Limit("user:a", 60), Limit("ip:1.2.3.4", 2)
    assert limiter.acquire([user, ip]) == 0.0
    assert limiter.acquire([user, ip]) == 0.0
    assert limiter.acquire([user, ip]) == pytest.approx(30.0)  # the IP's bucket is empty…
    other_ip = Limit("ip:5.6.7.8", 2)
    # …and the refused request took nothing from the user's: 58 of 60 are left.
    assert [limiter.acquire([user, other_ip]) for _ in range(2)] == [0.0, 0.0]
    assert [limiter.acquire([user]) for _ in range(56)] == [0.0] * 56
    assert limiter.acquire([user]) == pytest.approx(1.0)
    assert limiter.acquire([Limit("key:x", 0)]) == 0.0  # 0: no limit


def test_buckets_are_bounded_and_a_changed_limit_starts_afresh() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, max_keys=3)
    for name in "abcd":
        assert limiter.acquire([Limit(f"ip:{name}", 1)]) == 0.0
    assert len(limiter._buckets) == 3 and "ip:a" not in limiter._buckets
    assert limiter.acquire([Limit("ip:d", 1)]) > 0
    assert limiter.acquire([Limit("ip:d", 5)]) == 0.0  # promoted: the new rate, full


def test_a_submission_window_counts_the_last_day_and_keeps_no_more_than_the_quota() -> None:
    clock = FakeClock()
    windows = SubmissionWindows(100.0, clock=clock)
    assert not windows.known("a", 3)
    windows.fill("a", [905.0, 930.0, 960.0, 990.0], keep=3)  # as the store had them
    assert windows.known("a", 3) and not windows.known("a", 5)  # another quota: read again
    assert windows.used("a") == (3, 930.0)  # the latest three; 905 no longer matters
    clock.now = 1031.0  # 930 is over 100 s old now
    assert windows.used("a") == (2, 960.0)
    windows.record("a")
    windows.record("a")
    assert windows.used("a") == (3, 990.0)  # the latest three: 990 and the two just now
    windows.record("nobody")  # not filled: left to the store
    assert not windows.known("nobody", 3) and windows.used("nobody") == (0, None)


def test_submission_windows_forget_aged_and_least_recent_users() -> None:
    clock = FakeClock()
    windows = SubmissionWindows(100.0, clock=clock, max_users=2)
    windows.fill("a", [990.0], keep=5)
    windows.fill("b", [995.0], keep=5)
    windows.fill("c", [999.0], keep=5)  # one over: the least recently used goes
    assert not windows.known("a", 5) and windows.known("b", 5) and windows.known("c", 5)
    clock.now = 1096.0  # b's only submission has aged out, c's has not
    assert windows.used("c") == (1, 999.0)
    assert not windows.known("b", 5)  # forgotten on the way
    windows.fill("d", [], keep=5)
    assert windows.used("d") == (0, None) and windows.known("d", 5)  # the one asked is kept


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "from the store"])
async def test_a_daily_quota_counts_what_the_store_holds_from_before_a_restart(
    tmp_path: Path, in_memory: bool
) -> None:
    """Submissions of the last day, by a previous process, count against the quota: the
    oldest of the latest ones says when a query is allowed again."""
    settings = load_settings(data_dir=tmp_path, queries_per_day_user=3)
    store = await Store(settings.resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.USER, nickname="quinn")
        now = utcnow()
        for hours_ago in (30, 20, 10, 1):  # 30 h ago no longer counts; 20 h ago is the oldest
            await store.queries.create(
                Query(
                    user_id=user.id,
                    query_type="chat",
                    prompt="hi",
                    created_at=now - timedelta(hours=hours_ago),
                )
            )
        windows = SubmissionWindows(86_400.0) if in_memory else None
        admission = Admission(settings, store, scheduler=None, submissions=windows)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError) as refused:
            await admission.check(Principal(user, "api_key"))
        assert refused.value.code == "quota_exceeded"
        assert refused.value.retry_after == pytest.approx(4 * 3600, abs=60)
    finally:
        await store.close()


def test_a_bucket_reports_how_long_until_its_next_token() -> None:
    bucket = TokenBucket(capacity=2, period=60, tokens=0.5, updated=0)
    assert bucket.wait() == pytest.approx(15.0)
    bucket.refill(15)
    assert bucket.wait() == 0.0


@dataclass
class LimitedRealm:
    realm: Realm
    user_key: str
    user_id: str


@pytest_asyncio.fixture(loop_scope="session")
async def limited(tmp_path: Path, ollama_stub: StubServer) -> AsyncIterator[LimitedRealm]:
    sysop_key = await create_sysop(tmp_path)
    store = await Store(load_settings(data_dir=tmp_path).resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.USER, nickname="ursula")
        user_key = await store.credentials.create_api_key(user.id)
    finally:
        await store.close()
    env = FAST_ENV | {
        "RENTAHAL_QUERIES_PER_MINUTE_GUEST": "3",
        "RENTAHAL_QUERIES_PER_MINUTE_USER": "4",
        "RENTAHAL_QUERIES_PER_DAY_USER": "6",
    }
    async with BrokerProcess(tmp_path, env=env) as broker:
        realm = Realm(broker, sysop_key)
        await ollama_stub.reset()
        await realm.add_worker("llm", ollama_stub)
        yield LimitedRealm(realm, user_key, user.id)


def chat(prompt: str) -> dict[str, object]:
    return {"type": "submit_query", "query": {"prompt": prompt, "query_type": "chat"}}


async def test_a_guest_over_the_limit_is_told_when_to_retry_and_keeps_the_connection(
    limited: LimitedRealm,
) -> None:
    broker = limited.realm.broker
    async with broker.bus(cookie=await broker.guest_cookie()) as guest:
        replies = [await guest.request(chat(f"q{i}")) for i in range(4)]
        assert [r["type"] for r in replies] == ["query_accepted"] * 3 + ["error"]
        refused = replies[3]
        assert refused["code"] == "rate_limited" and 0 < refused["retry_after"] <= 20
        assert "try again in" in refused["message"]
        # An intent counts too; the connection is as usable as before.
        intent = await guest.request({"type": "intent", "text": "chat hi"})
        assert intent["code"] == "rate_limited"
        assert (await guest.request({"type": "ping"}))["type"] == "pong"
    # The sysop is not limited.
    async with broker.bus(api_key=limited.realm.sysop_key) as sysop:
        replies = [await sysop.request(chat(f"s{i}")) for i in range(6)]
        assert {r["type"] for r in replies} == {"query_accepted"}


async def test_rest_and_the_openai_api_answer_429_with_retry_after(limited: LimitedRealm) -> None:
    headers = {"Authorization": f"Bearer {limited.user_key}"}
    async with httpx.AsyncClient(base_url=limited.realm.broker.url, headers=headers) as http:
        statuses = []
        for i in range(4):
            response = await http.post("/api/v1/queries", json={"prompt": f"r{i}"})
            statuses.append(response.status_code)
        assert statuses == [202] * 4
        refused = await http.post("/api/v1/queries", json={"prompt": "r5"})
        assert refused.status_code == 429
        assert refused.json()["detail"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 15
        openai = await http.post(
            "/v1/chat/completions",
            json={"model": "", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert openai.status_code == 429, openai.text
        assert openai.json()["error"]["type"] == "rate_limit_error"
        assert openai.json()["error"]["code"] == "rate_limited"
        assert int(openai.headers["retry-after"]) >= 1


async def test_the_daily_quota_of_a_role_holds_across_the_ways_in(tmp_path: Path) -> None:
    sysop_key = await create_sysop(tmp_path)
    store = await Store(load_settings(data_dir=tmp_path).resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.USER, nickname="quentin")
        user_key = await store.credentials.create_api_key(user.id)
    finally:
        await store.close()
    env = FAST_ENV | {"RENTAHAL_QUERIES_PER_DAY_USER": "3"}
    async with (
        StubServer("ollama", models=["llama3"]) as stub,
        BrokerProcess(tmp_path, env=env) as broker,
    ):
        await Realm(broker, sysop_key).add_worker("llm", stub)
        async with broker.bus(api_key=user_key) as bus:
            replies = [await bus.request(chat(f"d{i}")) for i in range(3)]
            assert {r["type"] for r in replies} == {"query_accepted"}
            refused = await bus.request(chat("one too many"))
        assert refused["code"] == "quota_exceeded", refused
        assert 86_000 < refused["retry_after"] <= 86_400
        headers = {"Authorization": f"Bearer {user_key}"}
        async with httpx.AsyncClient(base_url=broker.url, headers=headers) as http:
            rest = await http.post("/api/v1/queries", json={"prompt": "and by REST"})
        assert rest.status_code == 429 and rest.json()["detail"]["code"] == "quota_exceeded"
        assert int(rest.headers["retry-after"]) > 86_000


async def test_a_ban_counts_even_for_a_caller_authenticated_before_it(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    store = await Store(settings.resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.USER, nickname="mallory")
        principal = Principal(user, "api_key")  # resolved while the user was in good standing
        admission = Admission(settings, store, scheduler=None)  # type: ignore[arg-type]
        await admission.check(principal)
        await store.users.set_banned(user.id, True)
        with pytest.raises(ProtocolError) as refused:
            await admission.check(principal)
        assert refused.value.code == "banned"
    finally:
        await store.close()
