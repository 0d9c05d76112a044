"""Faults and hostile input at the door: floods of sockets, slow clients, guests that ask
nothing. Each is refused clearly or closed in time, and leaves nothing behind.

- the bus takes `max_connections` sockets, `max_connections_per_ip` from one address, and
  refuses the rest at the handshake (503 `unavailable` / 429 `rate_limited`, JSON body,
  `Retry-After`); a sysop still gets in; outbound workers have a room of their own;
- a request whose headers or body trickle in slower than `header_timeout` / `body_timeout`
  is answered 408 and closed; a slow request within the limits is served;
- guests are stored at their first act, keep their id across reconnects before and after,
  and stored guests who left nothing behind are swept after `guest_expiry_days`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update
from starlette.datastructures import Headers as HttpHeaders
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

from rentahal.auth import Authenticator
from rentahal.auth.identity import SESSION_COOKIE
from rentahal.auth.nicknames import check_nickname
from rentahal.config import load_settings
from rentahal.core.errors import ProtocolError
from rentahal.limits import ConnectionSlots, Limit, RateLimiter
from rentahal.store import Query, Role, Store, User, utcnow
from rentahal.store.models import Session
from rentahal.store.users import guest_nickname
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import FAST_ENV, Realm, create_sysop

SESSION = "rentahal_session"


async def open_store(data_dir: Path) -> Store:
    """The broker's own SQLite database, opened beside it (as `create_sysop` does)."""
    return await Store(load_settings(data_dir=data_dir).resolved_database_url).open()


async def count(store: Store, model: type[User] | type[Session]) -> int:
    async with store.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def bus_socket(broker: BrokerProcess, **headers: str) -> ClientConnection:
    """A raw bus socket, greeted (so the broker has finished its handshake)."""
    ws = await connect(broker.ws_url, additional_headers=headers)
    while json.loads(await ws.recv())["type"] != "user_info":
        pass
    return ws


async def refused(attempt: Awaitable[Any]) -> tuple[int, dict[str, Any], Headers]:
    """The status, JSON body and headers of a refused handshake."""
    with pytest.raises(InvalidStatus) as refusal:
        await attempt
    response = refusal.value.response
    return response.status_code, json.loads(response.body or b"{}"), response.headers


# --- connection counts ---------------------------------------------------------------------


async def test_the_bus_takes_max_connections_and_refuses_the_rest(tmp_path: Path) -> None:
    limit, extra = 12, 6
    sysop_key = await create_sysop(tmp_path)
    store = await open_store(tmp_path)
    async with store.db.session() as session:
        sysop_id = await session.scalar(select(User.id).where(User.nickname == "hal"))
    assert sysop_id is not None
    _, worker_token = await store.credentials.issue_api_key(sysop_id, scopes=["worker"])
    env = FAST_ENV | {
        "RENTAHAL_MAX_CONNECTIONS": str(limit),
        "RENTAHAL_MAX_CONNECTIONS_PER_IP": "0",
    }
    async with BrokerProcess(tmp_path, env=env) as broker, AsyncExitStack() as held:
        # A flood from many addresses (the broker trusts X-Forwarded-For from loopback, as
        # from a proxy there), all at once: exactly `limit` get in.
        flood = await asyncio.gather(
            *(
                bus_socket(broker, **{"X-Forwarded-For": f"198.51.100.{i}"})
                for i in range(limit + extra)
            ),
            return_exceptions=True,
        )
        accepted = [ws for ws in flood if isinstance(ws, ClientConnection)]
        for ws in accepted:
            held.push_async_callback(ws.close)
        refusals = [r for r in flood if not isinstance(r, ClientConnection)]
        assert len(accepted) == limit, refusals[:3]
        assert len(refusals) == extra
        for refusal in refusals:
            assert isinstance(refusal, InvalidStatus), refusal
            response = refusal.response
            assert response.status_code == 503
            body = json.loads(response.body or b"{}")
            assert body["code"] == "unavailable" and str(limit) in body["message"]
            assert int(response.headers["Retry-After"]) > 0

        # Full: one more is refused the same way; HTTP, a sysop and a worker still get in.
        status, body, headers = await refused(connect(broker.ws_url))
        assert (status, body["code"]) == (503, "unavailable") and "Retry-After" in headers
        async with httpx.AsyncClient(base_url=broker.url) as http:
            assert (await http.get("/healthz")).status_code == 200
        sysop = await bus_socket(broker, Authorization=f"Bearer {sysop_key}")
        held.push_async_callback(sysop.close)
        worker = await connect(
            broker.ws_url + "/worker",
            additional_headers={"Authorization": f"Bearer {worker_token}"},
        )
        await worker.close()

        # Sockets that close give their places back.
        for ws in accepted[: extra // 2]:
            await ws.close()

        async def room_again() -> bool:
            try:
                ws = await bus_socket(broker)
            except InvalidStatus:
                return False
            held.push_async_callback(ws.close)
            return True

        await eventually(room_again)
    await store.close()


async def test_one_address_gets_its_share_of_the_bus(tmp_path: Path) -> None:
    env = FAST_ENV | {"RENTAHAL_MAX_CONNECTIONS_PER_IP": "3"}
    async with BrokerProcess(tmp_path, env=env) as broker, AsyncExitStack() as held:
        crowd = {"X-Forwarded-For": "203.0.113.7"}
        mine = [await bus_socket(broker, **crowd) for _ in range(3)]
        for ws in mine:
            held.push_async_callback(ws.close)
        status, body, headers = await refused(connect(broker.ws_url, additional_headers=crowd))
        assert (status, body["code"]) == (429, "rate_limited"), body
        assert "address" in body["message"] and int(headers["Retry-After"]) > 0
        other = await bus_socket(broker, **{"X-Forwarded-For": "203.0.113.8"})
        held.push_async_callback(other.close)

        await mine[0].close()

        async def share_back() -> bool:
            try:
                ws = await bus_socket(broker, **crowd)
            except InvalidStatus:
                return False
            held.push_async_callback(ws.close)
            return True

        await eventually(share_back)


def test_connection_slots_count_rooms_and_addresses_and_forget_empty_ones() -> None:
    slots = ConnectionSlots(3, per_key=2)
    assert [slots.take("a"), slots.take("a"), slots.take("a")] == [None, None, "key"]
    assert slots.take("b") == "room"  # four open, three allowed
    for key in ("a", "a", "a", "b"):
        slots.release(key)
    assert (slots.open, slots.keys) == (0, 0)
    assert slots.take(None) is None and slots.open == 1


def test_rate_limit_buckets_that_refilled_are_forgotten() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    for address in range(500):
        limiter.acquire([Limit(f"ip:10.0.{address // 256}.{address % 256}", 60)])
    assert len(limiter) == 500
    now[0] += 61  # every bucket has refilled: they carry nothing any more
    limiter.acquire([Limit("ip:192.0.2.1", 60)])
    for _ in range(100):
        limiter.acquire([Limit("ip:192.0.2.1", 60)])
    assert len(limiter) < 10


# --- slow clients --------------------------------------------------------------------------

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MARGIN = 2.5  # a loaded machine's scheduling, on top of the timeout


@pytest_asyncio.fixture(loop_scope="session")
async def patient_broker(tmp_path: Path) -> AsyncIterator[BrokerProcess]:
    env = FAST_ENV | {
        "RENTAHAL_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "RENTAHAL_BODY_TIMEOUT": str(BODY_TIMEOUT),
    }
    async with BrokerProcess(tmp_path, env=env) as broker:
        yield broker


async def drip(
    broker: BrokerProcess, lines: list[bytes], every: float, *, then: bytes = b""
) -> tuple[bytes, float]:
    """Send `lines` one at a time, `every` seconds apart, then `then`; returns everything
    the broker sent until it closed the connection, and when it closed it (seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    started = time.monotonic()

    async def send() -> None:
        try:
            for index, line in enumerate(lines):
                if index:
                    await asyncio.sleep(every)
                writer.write(line)
                await writer.drain()
            writer.write(then)
            await writer.drain()
        except ConnectionError:
            pass

    sender = asyncio.create_task(send())
    try:
        received = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + BODY_TIMEOUT + 10)
        return received, time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()


async def test_slowloris_headers_are_cut_off_and_a_slow_request_in_time_is_served(
    patient_broker: BrokerProcess,
) -> None:
    request = [b"GET /healthz HTTP/1.1\r\n", b"Host: hal\r\n"]
    endless = request + [f"X-Slow-{i}: {'a' * 8}\r\n".encode() for i in range(60)]

    # Many at once, each sending a header line every 0.5 s: all closed with 408 in time.
    results = await asyncio.gather(*(drip(patient_broker, endless, 0.5) for _ in range(40)))
    for received, closed_after in results:
        assert received.startswith(b"HTTP/1.1 408"), received[:80]
        assert HEADER_TIMEOUT * 0.9 <= closed_after <= HEADER_TIMEOUT + MARGIN, closed_after

    # A connection that never sends a byte is closed too.
    silent, closed_after = await drip(patient_broker, [], 0.0)
    assert silent.startswith(b"HTTP/1.1 408") and closed_after <= HEADER_TIMEOUT + MARGIN

    # Slow but within the limit: headers over ~0.6 s of the 2 s, then served.
    slow = [*request, b"X-Slow: 1\r\n", b"Connection: close\r\n"]
    received, _ = await drip(patient_broker, slow, 0.2, then=b"\r\n")
    assert received.startswith(b"HTTP/1.1 200"), received[:80]
    assert received.endswith(b'{"status":"ok"}')


async def test_a_client_still_talking_when_cut_off_is_not_reset(
    patient_broker: BrokerProcess,
) -> None:
    """A socket closed outright answers the client's next bytes with a reset, which destroys
    whatever the client had not read yet, the 408 included: the broker stops writing and
    drains what still comes (lingering close), then closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", patient_broker.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        for _ in range(5):  # a reset would fail the second write at the latest
            writer.write(b"X-Late: 1\r\n")
            await writer.drain()
        assert not writer.is_closing()
    finally:
        writer.close()


async def test_a_body_that_trickles_in_is_cut_off(patient_broker: BrokerProcess) -> None:
    head = (
        b"POST /api/v1/session/login HTTP/1.1\r\nHost: hal\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    received, closed_after = await drip(patient_broker, [head, b'{"nickname": '], 0.1)
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b'"code": "timeout"' in received
    assert closed_after <= BODY_TIMEOUT + MARGIN, closed_after

    # A whole body sent at once is served as usual (401: no such account).
    async with httpx.AsyncClient(base_url=patient_broker.url) as http:
        response = await http.post(
            "/api/v1/session/login", json={"nickname": "nobody", "password": "x" * 12}
        )
    assert response.status_code == 401, response.text


# --- guests --------------------------------------------------------------------------------


async def test_guests_are_stored_when_they_first_act_and_keep_their_id(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub)
    broker = realm.broker
    store = await open_store(broker.data_dir)
    try:
        users_before = await count(store, User)

        # 50 sockets and 10 page loads that ask nothing (in batches: one address's share).
        for _ in range(5):
            sockets = await asyncio.gather(*(bus_socket(broker) for _ in range(10)))
            await asyncio.gather(*(ws.close() for ws in sockets))
        async with httpx.AsyncClient(base_url=broker.url) as http:
            for _ in range(10):
                assert SESSION in (await http.get("/")).cookies
                http.cookies.clear()  # the next load is a new visitor
        assert await count(store, User) == users_before
        assert await count(store, Session) == 0

        # A guest with a cookie keeps its id before it is stored...
        cookie = await broker.guest_cookie()
        guid = await greeted_guid(broker.bus(cookie=cookie))
        assert await greeted_guid(broker.bus(cookie=cookie)) == guid
        assert await store.users.get(guid) is None

        # ...is stored by its first query...
        async with broker.bus(cookie=cookie) as guest:
            await guest.expect("user_info")
            reply = await guest.request({"type": "chat", "prompt": "remember me"})
            assert reply["type"] == "query_accepted", reply
            await guest.expect("query_result", lambda m: m["query_id"] == reply["query_id"])
        stored = await store.users.get(guid)
        assert stored is not None and stored.role == Role.GUEST.value
        assert await count(store, User) == users_before + 1

        # ...and keeps its id and history after, by its cookie.
        async with broker.bus(cookie=cookie) as again:
            info = await again.expect("user_info")
            assert info["data"]["guid"] == guid and info["data"]["role"] == "guest"
            history = await again.expect("previous_queries")
            assert [q["query_id"] for q in history["data"]] == [reply["query_id"]]
    finally:
        await store.close()


async def greeted_guid(client: BusClient) -> str:
    async with client as bus:
        guid: str = (await bus.expect("user_info"))["data"]["guid"]
        return guid


async def test_idle_guests_are_swept_and_the_others_kept(tmp_path: Path) -> None:
    await create_sysop(tmp_path)
    store = await open_store(tmp_path)
    long_ago = utcnow() - timedelta(days=31)
    idle = await store.users.create()
    recent = await store.users.create()
    asked = await store.users.create()
    banned = await store.users.create()
    registered = await store.users.create(role=Role.USER, nickname="zoe", password_hash="$x")
    await store.queries.create(Query(user_id=asked.id, query_type="chat", prompt="hi"))
    await store.users.set_banned(banned.id, True)
    async with store.db.session() as session:
        old = [idle.id, asked.id, banned.id, registered.id]
        await session.execute(update(User).where(User.id.in_(old)).values(last_seen_at=long_ago))
        await session.commit()

    async with BrokerProcess(tmp_path, env=FAST_ENV):  # it sweeps as it starts

        async def swept() -> bool:
            return await store.users.get(idle.id) is None

        await eventually(swept)
        for kept in (recent, asked, banned, registered):
            assert await store.users.get(kept.id) is not None, kept.nickname
    await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


async def test_a_guest_is_stored_once_and_only_while_its_cookie_lives(store_url: str) -> None:
    store = await Store(store_url).open()
    auth = Authenticator(store, "k" * 32, 3600)
    try:
        guest = auth.new_guest()
        cookies = {SESSION_COOKIE: guest.cookie}
        pending = await auth.from_headers(HttpHeaders(), cookies, lazy=True)
        assert pending is not None and not pending.is_stored
        assert pending.user.id == guest.principal.user.id
        assert (await count(store, User), await count(store, Session)) == (0, 0)

        # Two tabs act at once: one user, one session, the same id for both.
        both = await asyncio.gather(auth.save(pending), auth.save(pending))
        assert {p.user.id for p in both} == {pending.user.id} and all(p.is_stored for p in both)
        assert (await count(store, User), await count(store, Session)) == (1, 1)
        stored = await auth.from_headers(HttpHeaders(), cookies, lazy=True)
        assert stored is not None and stored.is_stored and stored.user.id == pending.user.id

        # Logged out: the cookie is nobody, stored or not.
        await auth.end_session(cookies)
        assert await auth.from_headers(HttpHeaders(), cookies, lazy=True) is None
        with pytest.raises(ProtocolError):
            await auth.save(pending)

        # The short nickname is someone's already: the guest gets its whole id in one.
        other = auth.new_guest()
        await store.users.create(nickname=guest_nickname(other.principal.user.id))
        saved = await auth.save(other.principal)
        assert saved.user.nickname == f"user_{other.principal.user.id}"

        # Swept once idle: its session goes with it.
        async with store.db.session() as session:
            long_ago = utcnow() - timedelta(days=40)
            await session.execute(update(User).values(last_seen_at=long_ago))
            await session.commit()
        assert await store.users.delete_idle_guests(seen_before=utcnow()) == 3
        assert (await count(store, User), await count(store, Session)) == (0, 0)
    finally:
        await store.close()


def test_nobody_may_choose_a_guests_nickname() -> None:
    for taken in ("user_0123abcd", "USER_0123ABCD"):
        with pytest.raises(ProtocolError) as refusal:
            check_nickname(taken, 32)
        assert refusal.value.code == "conflict"
    check_nickname("user_0123abcd", 32, current="user_0123abcd")  # one's own stays
    check_nickname("user_0123abcdef", 32)  # not the guests' form
