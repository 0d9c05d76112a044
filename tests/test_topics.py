"""`subscribe {topics}` on the bus: a connection hears only the broadcasts of the topics it
chose (its own queries always), and every topic it may see until it chooses."""

from __future__ import annotations

import asyncio

import pytest

from rentahal.client import AsyncClient, InvalidRequest
from rentahal.testing.process import StubServer
from tests.conftest import Realm

BROADCASTS = {"queue_update", "worker_update", "pool_update", "sysop_message", "active_users"}


async def test_subscribe_narrows_what_a_connection_hears(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("w1", rentahal_stub)
    broker = realm.broker
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as default,
        broker.bus(cookie=await broker.guest_cookie()) as narrow,
        broker.bus(cookie=await broker.guest_cookie()) as other,
        broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        for bus in (default, narrow, other):
            await bus.expect("user_info")
        reply = await narrow.request({"type": "subscribe", "topics": []})
        assert reply["type"] == "subscribed" and reply["topics"] == ["queries"], reply
        since = len(narrow.seen)
        default.inbox.clear()

        # Another user's query moves the queue; a sysop changes the workers and speaks.
        accepted = await other.request({"type": "chat", "prompt": "hello"})
        assert accepted["type"] == "query_accepted", accepted
        await default.expect("queue_update")
        await realm.add_worker("w2", rentahal_stub)
        await default.expect("worker_update", lambda m: "w2" in {w["name"] for w in m["workers"]})
        said = await sysop.request({"type": "sysop_message", "message": "hello all"})
        assert said["type"] == "ok", said
        await default.expect("sysop_message", lambda m: m["message"] == "hello all")

        # The narrow connection's own query still reaches it: the marker that everything
        # broadcast before it has been sent (or not) to it too.
        mine = await narrow.request({"type": "chat", "prompt": "marker"})
        assert mine["type"] == "query_accepted", mine
        await narrow.expect("query_result", lambda m: m["query_id"] == mine["query_id"])
        heard = {m["type"] for m in narrow.seen[since:]}
        assert not heard & BROADCASTS, heard
        assert {"query_accepted", "query_status", "query_result"} <= heard

        # Choosing again widens it: the queue's news comes back, the workers' does not.
        reply = await narrow.request({"type": "subscribe", "topics": ["queue", "queries"]})
        assert reply["topics"] == ["queries", "queue"], reply
        since = len(narrow.seen)
        await realm.add_worker("w3", rentahal_stub)
        await default.expect("worker_update", lambda m: "w3" in {w["name"] for w in m["workers"]})
        mine = await narrow.request({"type": "chat", "prompt": "again"})
        await narrow.expect("queue_update")
        await narrow.expect("query_result", lambda m: m["query_id"] == mine["query_id"])
        assert not any(m["type"] == "worker_update" for m in narrow.seen[since:])


async def test_unknown_and_sysop_topics_are_refused(realm: Realm) -> None:
    broker = realm.broker
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as guest,
        broker.bus(api_key=realm.sysop_key) as sysop,
        broker.bus(api_key=realm.sysop_key) as witness,  # hears every topic
    ):
        await guest.expect("user_info")
        reply = await guest.request({"type": "subscribe", "topics": ["queue", "weather"]})
        assert reply["type"] == "error" and reply["code"] == "invalid", reply
        assert "'weather'" in reply["message"]
        reply = await guest.request({"type": "subscribe", "topics": ["users"]})
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        assert "'users'" in reply["message"]
        reply = await guest.request({"type": "subscribe", "topics": ["workers"]})
        assert reply["topics"] == ["queries", "workers"], reply

        # A sysop may hear the users; one who chose not to misses a newcomer's arrival.
        reply = await sysop.request({"type": "subscribe", "topics": ["users"]})
        assert reply["topics"] == ["queries", "users"], reply
        async with broker.bus(cookie=await broker.guest_cookie()) as newcomer:
            await newcomer.expect("user_info")
            await sysop.expect("active_users", lambda m: len(m["users"]) >= 3)
        reply = await sysop.request({"type": "subscribe", "topics": []})
        assert reply["topics"] == ["queries"], reply
        since = len(sysop.seen)
        async with broker.bus(cookie=await broker.guest_cookie()) as later:
            guid = (await later.expect("user_info"))["data"]["guid"]
            # Sysops hear of the newcomer together: once the witness has, so would the sysop.
            await witness.expect("active_users", lambda m: guid in m["users"])
        assert (await sysop.request({"type": "ping"}))["type"] == "pong"
        assert not any(m["type"] == "active_users" for m in sysop.seen[since:])


async def test_the_sdk_chooses_its_topics(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("w1", rentahal_stub)
    async with AsyncClient(realm.broker.url, realm.sysop_key, reconnect=None) as client:
        assert await client.subscribe_topics(["queue"]) == {"queries", "queue"}
        with pytest.raises(InvalidRequest, match="'nope'"):
            await client.subscribe_topics(["queue", "nope"])
        heard: list[str] = []
        client.subscribe("*", lambda event: heard.append(event["type"]))
        await realm.add_worker("w2", rentahal_stub)  # the sysop's own action, yet not heard
        async with client.events("queue_update") as updates:
            assert await client.chat("marker")
            async with asyncio.timeout(10):
                await anext(updates)
        assert "worker_update" not in heard and "worker_health" not in heard, heard
