"""Accounts and roles (SPEC §9): registration that keeps a guest's history, password login
and logout, throttled guessing, expiring sessions, promotion and demotion by the sysop over
REST and the bus, and bans that cut every credential at once.

Everything but the limiter's and the hasher's own unit tests runs against a real broker
process over HTTP and the bus, and reads its SQLite file where the claim is about storage.
"""

from __future__ import annotations

import asyncio
import glob
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher

from rentahal.auth.login_limits import LoginLimiter
from rentahal.auth.passwords import (
    hash_password,
    needs_rehash,
    verify_password,
    verify_password_async,
)
from rentahal.store import NicknameTaken, Role, Store
from rentahal.store.users import LastSysop, NotRegistered
from rentahal.testing.broker import BrokerProcess, BusClient
from rentahal.testing.process import StubServer
from rentahal.testing.waiting import eventually
from tests.conftest import Realm

SESSION = "rentahal_session"
PASSWORD = "correct horse battery"
EVIL = "http://evil.example"


# --- helpers -------------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Http:
    """One fresh client per request, so no cookie jar sends anything the test did not."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker

    def browser(self, cookie: str | None = None, ip: str | None = None) -> dict[str, str]:
        """Headers a same-site browser page sends: its cookie and our Origin."""
        headers = {"Origin": self.broker.url}
        if cookie:
            headers["Cookie"] = f"{SESSION}={cookie}"
        if ip:
            # uvicorn trusts X-Forwarded-For from 127.0.0.1 (a reverse proxy on this host):
            # the way to be clients at other addresses here.
            headers["X-Forwarded-For"] = ip
        return headers

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.broker.url, timeout=30) as http:
            return await http.request(method, path, **kwargs)

    async def register(
        self, nickname: str, password: str = PASSWORD, cookie: str | None = None
    ) -> httpx.Response:
        return await self.request(
            "POST",
            "/api/v1/account",
            json={"nickname": nickname, "password": password},
            headers=self.browser(cookie),
        )

    async def login(
        self,
        nickname: str,
        password: str = PASSWORD,
        cookie: str | None = None,
        ip: str | None = None,
    ) -> httpx.Response:
        return await self.request(
            "POST",
            "/api/v1/session/login",
            json={"nickname": nickname, "password": password},
            headers=self.browser(cookie, ip),
        )

    async def me(self, cookie: str | None = None, key: str | None = None) -> httpx.Response:
        headers = bearer(key) if key else {"Cookie": f"{SESSION}={cookie}"}
        return await self.request("GET", "/api/v1/me", headers=headers)

    async def new_user(self, nickname: str, password: str = PASSWORD) -> tuple[str, str]:
        """Register with no session; returns (guid, session cookie)."""
        response = await self.register(nickname, password)
        assert response.status_code == 201, response.text
        return response.json()["guid"], session_cookie(response)


def session_cookie(response: httpx.Response) -> str:
    """The session cookie a response sets (its value)."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == SESSION:
            return rest.split(";", 1)[0].strip('"')
    raise AssertionError(f"no {SESSION} cookie set: {response.headers}")


def database_file(broker: BrokerProcess) -> Path:
    (path,) = glob.glob(str(broker.data_dir / "*.db"))
    return Path(path)


def query_db(broker: BrokerProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read or write the broker's SQLite file as another process would (WAL allows it)."""
    with sqlite3.connect(database_file(broker), timeout=10) as db:
        return db.execute(sql, args).fetchall()


def stored_anywhere(broker: BrokerProcess, data: bytes) -> list[str]:
    """The database's files (the file, its WAL) that hold `data` as it is."""
    paths = glob.glob(str(database_file(broker)) + "*")
    assert paths
    return [path for path in paths if data in Path(path).read_bytes()]


async def greeted(bus: BusClient) -> dict[str, Any]:
    info: dict[str, Any] = (await bus.expect("user_info"))["data"]
    return info


async def audit(http: Http, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The audit log, oldest first."""
    response = await http.request("GET", "/api/v1/audit", headers=headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries[::-1]


# --- registration --------------------------------------------------------------------------


async def test_a_guest_registers_and_keeps_their_history(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await realm.add_worker("w1", ollama_stub)
    broker, http = realm.broker, Http(realm.broker)
    guest_cookie = await broker.guest_cookie()
    async with broker.bus(cookie=guest_cookie) as tab:
        guest = await greeted(tab)
        assert guest["role"] == "guest"
        reply = await tab.request({"type": "chat", "prompt": "remember me"})
        assert reply["type"] == "query_accepted", reply
        query_id = reply["query_id"]
        await tab.expect("query_result", lambda m: m["query_id"] == query_id)

        registered = await http.register("Dave_1", cookie=guest_cookie)
        assert registered.status_code == 201, registered.text
        body = registered.json()
        assert (body["guid"], body["nickname"], body["role"]) == (guest["guid"], "Dave_1", "user")
        assert body["query_count"] == 1
        # The tab that was open as the guest learns of it at once, and acts as the user.
        info = await tab.expect("user_info", lambda m: m["data"]["role"] == "user")
        assert info["data"]["guid"] == guest["guid"]

    # A fresh session for the new standing; the guest's cookie is over.
    account_cookie = session_cookie(registered)
    assert account_cookie != guest_cookie
    assert (await http.me(guest_cookie)).status_code == 401
    me = await http.me(account_cookie)
    assert me.status_code == 200 and me.json()["guid"] == guest["guid"]
    history = await http.request(
        "GET", "/api/v1/queries", headers={"Cookie": f"{SESSION}={account_cookie}"}
    )
    assert [q["query_id"] for q in history.json()] == [query_id]
    assert history.json()[0]["result"] == "echo: remember me"

    # Registered already: 409, whatever the nickname.
    again = await http.register("Dave_2", cookie=account_cookie)
    assert again.status_code == 409, again.text

    # The password is stored as an argon2id hash, and nowhere as itself.
    ((stored,),) = query_db(broker, "SELECT password_hash FROM users WHERE id = ?", guest["guid"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    assert not stored_anywhere(broker, PASSWORD.encode())
    assert PASSWORD not in broker.output


async def test_registration_rules(realm: Realm) -> None:
    broker, http = realm.broker, Http(realm.broker)
    guid, _ = await http.new_user("frank")
    assert (await http.register("someone", "short")).status_code == 422  # under 10 characters
    assert (await http.register("someone", "x" * 257)).status_code == 422
    # The bus's nickname rule, in one place for both.
    for taken in ("frank", "FRANK", "hal", "sysop", "Admin"):
        response = await http.register(taken)
        assert response.status_code == 409, (taken, response.text)
        assert response.json()["detail"]["code"] == "conflict"
    for bad in ("ab", "a b", "<script>", "x" * 33, "../../etc", "a\u0000b"):
        response = await http.register(bad)
        assert response.status_code == 422, (bad, response.status_code)
    # A guest may not take a registered user's nickname by the bus either.
    async with broker.bus(cookie=await broker.guest_cookie()) as guest:
        await greeted(guest)
        reply = await guest.request({"type": "set_nickname", "nickname": "Frank"})
        assert reply["type"] == "error" and reply["code"] == "conflict", reply

    # Not with an API key (a narrow key must not mint a password), nor from another site.
    refused = await http.request(
        "POST",
        "/api/v1/account",
        json={"nickname": "keyed", "password": PASSWORD},
        headers=bearer(realm.sysop_key),
    )
    assert refused.status_code == 403
    cross_site = await http.request(
        "POST",
        "/api/v1/account",
        json={"nickname": "lured", "password": PASSWORD},
        headers={"Origin": EVIL},
    )
    assert cross_site.status_code == 403
    assert (await http.login("lured")).status_code == 401  # nothing was made

    users = await http.request("GET", "/api/v1/users", headers=bearer(realm.sysop_key))
    by_name = {u["nickname"]: u for u in users.json()}
    assert by_name["frank"]["guid"] == guid and by_name["frank"]["registered"] is True
    assert by_name["frank"]["role"] == "user" and by_name["hal"]["registered"] is False
    assert by_name["frank"]["query_count"] == 0 and by_name["frank"]["is_banned"] is False
    assert not {"keyed", "lured", "someone"} & set(by_name)


# --- login and logout ----------------------------------------------------------------------


async def test_login_makes_a_fresh_session_and_logout_ends_it(realm: Realm) -> None:
    broker, http = realm.broker, Http(realm.broker)
    guid, first_cookie = await http.new_user("alice")

    # Logging in from a page that had a guest cookie: the old cookie is over (no fixation).
    planted = await broker.guest_cookie()
    assert (await http.me(planted)).status_code == 200
    response = await http.login("ALICE", cookie=planted)  # nicknames are case-blind
    assert response.status_code == 200, response.text
    assert response.json()["guid"] == guid and response.json()["nickname"] == "alice"
    cookie = session_cookie(response)
    assert cookie not in (planted, first_cookie)
    assert (await http.me(planted)).status_code == 401
    async with broker.bus(cookie=planted) as bus:  # the planted cookie is nobody now
        assert (await greeted(bus))["guid"] != guid
    assert (await http.me(cookie)).json()["guid"] == guid
    assert (await http.me(first_cookie)).json()["guid"] == guid  # other sessions stay

    # A program logs in with no cookie and no Origin.
    async with httpx.AsyncClient(base_url=broker.url) as program:
        plain = await program.post(
            "/api/v1/session/login", json={"nickname": "alice", "password": PASSWORD}
        )
    assert plain.status_code == 200 and plain.json()["guid"] == guid
    # Another site cannot log a browser in.
    lured = await http.request(
        "POST",
        "/api/v1/session/login",
        json={"nickname": "alice", "password": PASSWORD},
        headers={"Origin": EVIL},
    )
    assert lured.status_code == 403

    # Log out: the session ends on the server, the cookie is cleared in the browser.
    out = await http.request("DELETE", "/api/v1/session", headers=http.browser(cookie))
    assert out.status_code == 204
    cleared = [h for h in out.headers.get_list("set-cookie") if h.startswith(f"{SESSION}=")]
    assert cleared and ("max-age=0" in cleared[0].lower() or '=""' in cleared[0])
    assert (await http.me(cookie)).status_code == 401
    assert query_db(broker, "SELECT count(*) FROM sessions WHERE user_id = ?", guid) == [(2,)]


async def test_wrong_password_and_unknown_nickname_look_alike(realm: Realm) -> None:
    broker, http = realm.broker, Http(realm.broker)
    await http.new_user("bob")
    guest_nickname = (await http.me(await broker.guest_cookie())).json()["nickname"]

    reference = hash_password("anything at all")
    local = time.perf_counter()
    verify_password(reference, "something else")
    one_check = time.perf_counter() - local  # what one argon2 check takes here

    answers = []
    for index, (nickname, password) in enumerate(
        [
            ("bob", "not the password"),
            ("nobody_here", PASSWORD),
            (guest_nickname, PASSWORD),  # a guest has no password to log in with
            ("bob", "x" * 256),
        ]
    ):
        started = time.perf_counter()
        response = await http.login(nickname, password, ip=f"10.0.0.{index + 1}")
        took = time.perf_counter() - started
        assert response.status_code == 401, (nickname, response.text)
        answers.append(response.content)
        # The same argon2 work either way: an unknown nickname is not answered faster.
        # (Without it, an unknown nickname would be answered in a few milliseconds.)
        assert took > one_check / 4, (nickname, took, one_check)
    assert len(set(answers)) == 1, answers
    assert b"wrong nickname or password" in answers[0]


async def test_password_guessing_is_throttled(realm: Realm) -> None:
    http = Http(realm.broker)
    for name in ("bob", "carol", "dave"):
        await http.new_user(name)

    # Five wrong guesses from one address, then the sixth is refused before any check...
    for attempt in range(5):
        response = await http.login("bob", f"guess {attempt}", ip="10.1.0.1")
        assert response.status_code == 401, (attempt, response.text)
    locked = await http.login("bob", "guess 5", ip="10.1.0.1")
    assert locked.status_code == 429, locked.text
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= 300
    detail = locked.json()["detail"]
    assert detail["code"] == "rate_limited" and 0 < detail["retry_after"] <= 300
    # ...and so is the right password, from there or anywhere (the nickname is locked)...
    assert (await http.login("bob", ip="10.1.0.1")).status_code == 429
    assert (await http.login("bob", ip="10.1.0.2")).status_code == 429
    # ...and that address cannot go on with another nickname; others are unaffected.
    assert (await http.login("carol", ip="10.1.0.1")).status_code == 429
    assert (await http.login("carol", ip="10.1.0.2")).status_code == 200

    # A successful login starts the nickname's count afresh.
    for attempt in range(4):
        assert (await http.login("dave", f"no {attempt}", ip="10.2.0.1")).status_code == 401
    assert (await http.login("dave", ip="10.2.0.2")).status_code == 200
    for attempt in range(5):
        response = await http.login("dave", f"again {attempt}", ip="10.2.0.3")
        assert response.status_code == 401, (attempt, response.status_code)
    assert (await http.login("dave", "and again", ip="10.2.0.3")).status_code == 429


async def test_registrations_from_one_address_are_limited(realm: Realm) -> None:
    http = Http(realm.broker)

    async def register(nickname: str, ip: str) -> httpx.Response:
        body = {"nickname": nickname, "password": PASSWORD}
        return await http.request(
            "POST", "/api/v1/account", json=body, headers=http.browser(None, ip)
        )

    for n in range(10):  # registrations_per_hour_per_ip
        assert (await register(f"maker{n}", "10.9.0.1")).status_code == 201
    refused = await register("maker10", "10.9.0.1")
    assert refused.status_code == 429 and refused.json()["detail"]["code"] == "rate_limited"
    assert 300 <= int(refused.headers["Retry-After"]) <= 360  # one more an hour: 6 min
    assert (await register("elsewhere", "10.9.0.2")).status_code == 201


async def test_an_expired_session_is_refused(realm: Realm) -> None:
    broker, http = realm.broker, Http(realm.broker)
    guid, cookie = await http.new_user("erin")
    assert (await http.me(cookie)).status_code == 200
    before = query_db(broker, "SELECT expires_at FROM sessions WHERE user_id = ?", guid)
    assert len(before) == 1
    # Age the session past its expiry, as an hour of silence would.
    query_db(
        broker,
        "UPDATE sessions SET expires_at = '2000-01-01 00:00:00.000000' WHERE user_id = ?",
        guid,
    )
    assert (await http.me(cookie)).status_code == 401
    async with broker.bus(cookie=cookie) as bus:
        info = await greeted(bus)
        assert info["guid"] != guid and info["role"] == "guest"
    # Logging in again gives a live one.
    response = await http.login("erin")
    assert response.status_code == 200
    assert (await http.me(session_cookie(response))).json()["guid"] == guid


# --- roles ---------------------------------------------------------------------------------


async def test_promote_and_demote_over_rest_and_the_bus(realm: Realm) -> None:
    broker, http = realm.broker, Http(realm.broker)
    sysop_key = realm.sysop_key
    hal = (await http.me(key=sysop_key)).json()["guid"]
    dave, dave_cookie = await http.new_user("dave")
    guest_cookie = await broker.guest_cookie()
    guest = (await http.me(guest_cookie)).json()["guid"]

    async def put_role(user_id: str, role: str, headers: dict[str, str]) -> httpx.Response:
        return await http.request(
            "PUT", f"/api/v1/users/{user_id}/role", json={"role": role}, headers=headers
        )

    async with (
        broker.bus(cookie=dave_cookie) as dave_bus,
        broker.bus(api_key=sysop_key) as sysop,
        broker.bus(cookie=guest_cookie) as guest_bus,
    ):
        await greeted(dave_bus)
        await greeted(sysop)
        await greeted(guest_bus)

        async def may_get_stats(bus: BusClient) -> bool:
            reply = await bus.request({"type": "get_stats"})
            assert reply["type"] in ("system_stats", "error"), reply
            return reply["type"] == "system_stats"

        assert not await may_get_stats(dave_bus)
        # Nobody but a sysop may change roles.
        reply = await guest_bus.request({"type": "set_role", "user_guid": guest, "role": "sysop"})
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        refused = await put_role(dave, "sysop", http.browser(dave_cookie))
        assert refused.status_code == 403

        # Promoted over REST: dave's open connection is a sysop's at once, no reconnect.
        promoted = await put_role(dave, "sysop", bearer(sysop_key))
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["role"] == "sysop" and promoted.json()["is_sysop"] is True
        info = await dave_bus.expect("user_info", lambda m: m["data"]["role"] == "sysop")
        assert info["data"]["is_sysop"] is True
        assert await may_get_stats(dave_bus)
        stats = await http.request("GET", "/api/v1/stats", headers=http.browser(dave_cookie))
        assert stats.status_code == 200

        # Demoted over the bus: at once, too.
        reply = await sysop.request({"type": "set_role", "user_guid": dave, "role": "premium"})
        assert reply["type"] == "ok", reply
        await dave_bus.expect("user_info", lambda m: m["data"]["role"] == "premium")
        assert not await may_get_stats(dave_bus)
        # The guest's only user_info is its greeting's: nobody else's change reached it.
        assert [m["type"] for m in guest_bus.seen].count("user_info") == 1

        # A guest (no password) never becomes a sysop, by either way.
        assert (await put_role(guest, "sysop", bearer(sysop_key))).status_code == 409
        reply = await sysop.request({"type": "set_role", "guid": guest, "role": "sysop"})
        assert reply["type"] == "error" and reply["code"] == "conflict", reply
        # Nor is anyone made a guest, and unknown users are not found.
        assert (await put_role(dave, "guest", bearer(sysop_key))).status_code == 422
        reply = await sysop.request({"type": "set_role", "user_guid": dave, "role": "guest"})
        assert reply["type"] == "error" and reply["code"] == "invalid", reply
        assert (await put_role("f" * 32, "user", bearer(sysop_key))).status_code == 404

        # The last sysop stays one.
        last = await put_role(hal, "user", bearer(sysop_key))
        assert last.status_code == 409, last.text
        reply = await sysop.request({"type": "set_role", "user_guid": hal, "role": "premium"})
        assert reply["type"] == "error" and reply["code"] == "conflict", reply
        assert await may_get_stats(sysop)

        # With a second sysop, the first may go; then the second is the last.
        assert (await put_role(dave, "sysop", bearer(sysop_key))).status_code == 200
        await dave_bus.expect("user_info", lambda m: m["data"]["role"] == "sysop")
        demoted = await put_role(hal, "user", http.browser(dave_cookie))
        assert demoted.status_code == 200, demoted.text
        await sysop.expect("user_info", lambda m: m["data"]["role"] == "user")
        assert not await may_get_stats(sysop)
        workers = await http.request("GET", "/api/v1/workers", headers=bearer(sysop_key))
        assert workers.status_code == 403
        assert (await put_role(dave, "user", http.browser(dave_cookie))).status_code == 409

    changes = [
        (e["actor"], e["target"], e["detail"])
        for e in await audit(http, http.browser(dave_cookie))
        if e["action"] == "set_role"
    ]
    assert changes == [
        ("hal", dave, {"role": "sysop", "previous": "user"}),
        ("hal", dave, {"role": "premium", "previous": "sysop"}),
        ("hal", dave, {"role": "sysop", "previous": "premium"}),
        ("dave", hal, {"role": "user", "previous": "sysop"}),
    ]
    assert (
        await http.request("GET", "/api/v1/users", headers=bearer(sysop_key))
    ).status_code == 403


# --- bans ----------------------------------------------------------------------------------


async def test_a_ban_cuts_every_credential_at_once_and_unban_restores_them(
    realm: Realm, ollama_stub: StubServer
) -> None:
    await ollama_stub.reset()
    await ollama_stub.configure(latency=30)
    await realm.add_worker("slow", ollama_stub, max_concurrency=1)
    broker, http = realm.broker, Http(realm.broker)
    eve, cookie = await http.new_user("eve")
    made = await http.request(
        "POST", "/api/v1/keys", json={"name": "sdk"}, headers=http.browser(cookie)
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]

    async def access() -> dict[str, int]:
        """Status of each way in: REST by key, /v1 by key, REST by cookie."""
        models = await http.request("GET", "/v1/models", headers=bearer(key))
        return {
            "rest key": (await http.me(key=key)).status_code,
            "/v1 key": models.status_code,
            "cookie": (await http.me(cookie)).status_code,
        }

    assert await access() == {"rest key": 200, "/v1 key": 200, "cookie": 200}

    def in_flight(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await ollama_stub.stats())["in_flight"] == count

        return check

    async with (
        broker.bus(cookie=cookie) as tab,
        broker.bus(api_key=key) as program,
        broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        for bus in (tab, program, sysop):
            await greeted(bus)
        running = (await tab.request({"type": "chat", "prompt": "slow one"}))["query_id"]
        queued = (await program.request({"type": "chat", "prompt": "waits"}))["query_id"]
        await eventually(in_flight(1), within=10)

        started = time.monotonic()
        reply = await sysop.request({"type": "ban_user", "user_guid": eve})
        assert reply["type"] == "ok", reply
        for bus in (tab, program):
            await asyncio.wait_for(bus.closed.wait(), 3)
            assert bus.close_code == 4003
        assert await access() == {"rest key": 403, "/v1 key": 403, "cookie": 403}
        assert time.monotonic() - started < 3

        # Their running query was stopped at the worker, the queued one never starts.
        async def worker_saw_disconnect() -> bool:
            return (await ollama_stub.stats())["disconnected"] >= 1

        await eventually(worker_saw_disconnect, within=5)
        await eventually(in_flight(0), within=5)
        for query_id in (running, queued):
            state = await http.request(
                "GET", f"/api/v1/queries/{query_id}", headers=bearer(realm.sysop_key)
            )
            assert state.json()["state"] == "cancelled", state.json()
        async with broker.bus(api_key=key) as again:
            error = await again.expect("error")
            assert error["code"] == "banned"
            await asyncio.wait_for(again.closed.wait(), 3)
        login = await http.login("eve")
        assert login.status_code == 403 and login.json()["detail"]["code"] == "banned"

        reply = await sysop.request({"type": "unban_user", "user_guid": eve})
        assert reply["type"] == "ok", reply

    assert await access() == {"rest key": 200, "/v1 key": 200, "cookie": 200}
    await ollama_stub.configure(latency=0)
    async with broker.bus(api_key=key) as back:
        assert (await greeted(back))["guid"] == eve
        reply = await back.request({"type": "chat", "prompt": "I am back"})
        assert reply["type"] == "query_accepted", reply
        result = await back.expect("query_result", lambda m: m["query_id"] == reply["query_id"])
        assert result["result"] == "echo: I am back"
    assert (await http.login("eve")).status_code == 200


async def test_sysop_actions_over_rest_as_on_the_bus(realm: Realm, ollama_stub: StubServer) -> None:
    """Ban, unban, terminate a user's queries and broadcast, by REST: the same effects as
    the bus's messages (whose own tests are above and in test_sysop_views.py)."""
    await ollama_stub.reset()
    await ollama_stub.configure(latency=30)
    await realm.add_worker("slow", ollama_stub, max_concurrency=1)
    broker, http = realm.broker, Http(realm.broker)
    sysop = bearer(realm.sysop_key)
    mallory, cookie = await http.new_user("mallory")
    async with broker.bus(cookie=cookie) as tab, broker.bus(cookie=None) as onlooker:
        await greeted(tab)
        await greeted(onlooker)
        ids = [(await tab.request({"type": "chat", "prompt": p}))["query_id"] for p in "ab"]
        stopped = await http.request("DELETE", f"/api/v1/users/{mallory}/queries", headers=sysop)
        assert (stopped.status_code, stopped.json()) == (200, {"terminated": 2})
        for query_id in ids:
            view = await http.request("GET", f"/api/v1/queries/{query_id}", headers=sysop)
            assert view.json()["state"] == "cancelled", view.json()

        said = await http.request(
            "POST", "/api/v1/broadcast", json={"message": "back in 5"}, headers=sysop
        )
        assert said.status_code == 204, said.text
        for bus in (tab, onlooker):
            assert (await bus.expect("sysop_message"))["message"] == "back in 5"

        banned = await http.request("PUT", f"/api/v1/users/{mallory}/ban", headers=sysop)
        assert banned.status_code == 204, banned.text
        await asyncio.wait_for(tab.closed.wait(), 3)
        assert tab.close_code == 4003
        assert (await http.me(cookie)).status_code == 403

    unbanned = await http.request("DELETE", f"/api/v1/users/{mallory}/ban", headers=sysop)
    assert unbanned.status_code == 204, unbanned.text
    assert (await http.me(cookie)).status_code == 200
    me = (await http.me(key=realm.sysop_key)).json()["guid"]
    itself = await http.request("PUT", f"/api/v1/users/{me}/ban", headers=sysop)
    assert (itself.status_code, itself.json()["detail"]["code"]) == (422, "invalid")
    nobody = await http.request("PUT", f"/api/v1/users/{'0' * 32}/ban", headers=sysop)
    assert nobody.status_code == 404
    # Sysops only: the user may not ban, broadcast or stop anyone's queries.
    for method, path in (
        ("PUT", f"/api/v1/users/{me}/ban"),
        ("DELETE", f"/api/v1/users/{me}/queries"),
        ("POST", "/api/v1/broadcast"),
    ):
        refused = await http.request(
            method, path, json={"message": "hi"}, headers=http.browser(cookie)
        )
        assert refused.status_code == 403, (path, refused.text)


# --- sessions from API keys ----------------------------------------------------------------


async def test_only_an_unscoped_key_opens_a_session(realm: Realm) -> None:
    http = Http(realm.broker)
    sysop = bearer(realm.sysop_key)
    narrow = await http.request(
        "POST", "/api/v1/keys", json={"name": "chat", "scopes": ["chat"]}, headers=sysop
    )
    worker = await http.request(
        "POST", "/api/v1/keys", json={"name": "box", "scopes": ["worker"]}, headers=sysop
    )
    for made in (narrow, worker):
        assert made.status_code == 201, made.text
        response = await http.request("POST", "/api/v1/session", headers=bearer(made.json()["key"]))
        assert response.status_code == 403, response.text
        assert not response.headers.get_list("set-cookie")
    full = await http.request("POST", "/api/v1/session", headers=sysop)
    assert full.status_code == 200 and (await http.me(session_cookie(full))).json()["is_sysop"]


# --- the parts on their own ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store(store_url).open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_store_registers_an_account_once_keeping_its_id(store: Store) -> None:
    guest = await store.users.create()
    user = await store.users.register(guest.id, "Zoe", "$argon2id$stand-in")
    assert user is not None and (user.id, user.nickname, user.role) == (guest.id, "Zoe", "user")
    assert user.is_registered and await store.users.register(guest.id, "Zoe2", "$x") is None
    premium = await store.users.create(role=Role.PREMIUM)  # promoted before registering
    registered = await store.users.register(premium.id, "Yann", "$argon2id$stand-in")
    assert registered is not None and registered.role == "premium"
    with pytest.raises(NicknameTaken):
        await store.users.register((await store.users.create()).id, "zoe", "$x")
    assert await store.users.register("f" * 32, "Xavier", "$x") is None


async def test_store_role_changes_keep_a_sysop(store: Store) -> None:
    first = await store.users.create(role=Role.SYSOP, nickname="first")
    guest = await store.users.create()
    with pytest.raises(NotRegistered):
        await store.users.change_role(guest.id, Role.SYSOP)
    with pytest.raises(LastSysop):
        await store.users.change_role(first.id, Role.USER)
    assert await store.users.change_role("f" * 32, Role.USER) is None
    # A banned sysop cannot act, so does not count as another one.
    second = await store.users.create(role=Role.SYSOP, nickname="second")
    await store.users.set_banned(second.id, True)
    with pytest.raises(LastSysop):
        await store.users.change_role(first.id, Role.PREMIUM)
    await store.users.set_banned(second.id, False)
    changed = await store.users.change_role(first.id, Role.PREMIUM)
    assert changed is not None and (changed[0].role, changed[1]) == ("premium", "sysop")
    member = await store.users.create(role=Role.USER, password_hash="$argon2id$stand-in")
    changed = await store.users.change_role(member.id, Role.SYSOP)
    assert changed is not None and changed[0].is_sysop


async def test_two_sysops_demoting_each_other_at_once_leave_one(store: Store) -> None:
    for round_ in range(5):
        pair = [
            await store.users.create(role=Role.SYSOP, nickname=f"s{round_}{side}") for side in "ab"
        ]
        ids = {u.id for u in pair}
        others = [u for u in await store.users.list() if u.is_sysop and u.id not in ids]
        for other in others:  # only this round's two are sysops
            await store.users.set_role(other.id, Role.USER)
        outcomes = await asyncio.gather(
            *(store.users.change_role(u.id, Role.USER) for u in pair), return_exceptions=True
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["LastSysop", "tuple"], outcomes
        assert sum(u.is_sysop for u in await store.users.list()) == 1


def test_password_hashes() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$") and stored != hash_password(PASSWORD)  # salted
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + " ")
    assert not verify_password("not a hash", PASSWORD)
    assert not needs_rehash(stored)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert verify_password(weak, PASSWORD) and needs_rehash(weak)


async def test_checking_no_hash_does_the_work_and_fails() -> None:
    assert not await verify_password_async(None, PASSWORD)
    stored = hash_password(PASSWORD)
    assert await verify_password_async(stored, PASSWORD)
    assert not await verify_password_async(stored, "nope")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_login_limiter_locks_then_lets_go() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, window=60, clock=clock)
    keys = ["ip:a", "nick:bob"]
    for _ in range(3):
        assert limiter.attempt(keys) is None
        clock.now += 1
    assert limiter.attempt(keys) == pytest.approx(57)  # the first failure ages out at 1060
    assert limiter.attempt(["ip:b", "nick:bob"]) == pytest.approx(57)
    assert limiter.attempt(["ip:b", "nick:carol"]) is None  # neither locked
    clock.now = 1060.5
    assert limiter.attempt(keys) is None  # one failure left the window: one more try
    assert limiter.attempt(keys) == pytest.approx(0.5)


def test_login_limiter_success_forgets_the_nickname_and_forgives_the_address() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        limiter.attempt(["ip:a", "nick:bob"])
    limiter.attempt(["ip:a", "nick:bob"])  # the third: right this time
    limiter.succeeded(forget=["nick:bob"], forgive=["ip:a"])
    assert limiter.retry_after("nick:bob") == 0
    assert limiter.attempt(["ip:a", "nick:carol"]) is None  # ip:a has 3 again now
    assert limiter.attempt(["ip:a", "nick:dave"]) is not None


def test_login_limiter_memory_is_bounded() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=5, window=60, max_keys=100, clock=clock)
    for index in range(10_000):
        limiter.attempt([f"ip:{index}"])
    assert len(limiter) <= 100
    assert limiter.attempt(["ip:9999"]) is None  # the newest are the ones kept
    clock.now += 61
    limiter.attempt(["ip:new"])
    assert limiter.retry_after("ip:9999") == 0
