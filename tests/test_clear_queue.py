"""A sysop clears the queue (`clear_queue`, SPEC §10): the waiting jobs of a realm, of a user,
or all of them end `cancelled` as a cancel does; jobs on a worker run on; it is audited."""

from __future__ import annotations

from typing import Any

import httpx

from rentahal.testing.broker import BusClient
from rentahal.testing.process import StubServer
from tests.conftest import Realm

CLEARED = "cleared by a sysop"


def query(prompt: str, query_type: str = "chat") -> dict[str, Any]:
    return {
        "type": "submit_query",
        "query": {"prompt": prompt, "query_type": query_type, "model_type": "worker_node"},
    }


async def submit(bus: BusClient, prompt: str, query_type: str = "chat") -> str:
    reply = await bus.request(query(prompt, query_type))
    assert reply["type"] == "query_accepted", reply
    return str(reply["query_id"])


async def dispatched(bus: BusClient, query_id: str) -> None:
    await bus.expect(
        "query_status", lambda m: m["query_id"] == query_id and m["state"] == "dispatched"
    )


async def cancelled(bus: BusClient, query_id: str) -> None:
    """The query's final event says it was cleared, as any cancel's does."""
    error = await bus.expect("error", lambda m: m.get("query_id") == query_id)
    assert error["code"] == "cancelled" and error["message"] == CLEARED, error
    assert error["is_final"] is True


async def test_clear_by_realm_user_and_all(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=3)
    # One slot per realm, each taken by a slow job, so everything else waits.
    await realm.add_worker("w-chat", rentahal_stub, max_concurrency=1)
    await realm.add_worker("w-tts", rentahal_stub, type="tts", max_concurrency=1)
    broker = realm.broker
    async with (
        broker.bus(cookie=await broker.guest_cookie()) as alice,
        broker.bus(cookie=await broker.guest_cookie()) as bob,
        broker.bus(api_key=realm.sysop_key) as sysop,
    ):
        alice_guid = (await alice.expect("user_info"))["data"]["guid"]
        await bob.expect("user_info")
        running = await submit(alice, "the running one")
        await dispatched(alice, running)
        await dispatched(alice, await submit(alice, "speak slowly", "tts"))
        alice_chat = await submit(alice, "alice waits")
        alice_tts = await submit(alice, "alice speaks", "tts")
        bob_chat = await submit(bob, "bob waits")
        bob_tts = await submit(bob, "bob speaks", "tts")

        reply = await sysop.request({"type": "clear_queue", "realm": "$SPEECH"})
        assert reply["type"] == "queue_cleared" and reply["cleared"] == 2, reply
        await cancelled(alice, alice_tts)
        await cancelled(bob, bob_tts)
        for owner in (alice, bob):
            notice = await owner.expect("sysop_message")
            assert notice["message"] == "The queue has been cleared ($SPEECH)"

        reply = await sysop.request({"type": "clear_queue", "user_guid": alice_guid})
        assert reply["cleared"] == 1, reply
        await cancelled(alice, alice_chat)
        await alice.expect("sysop_message", lambda m: m["message"].startswith("The queue"))
        assert not any(m.get("query_id") == bob_chat and m["type"] == "error" for m in bob.seen)

        reply = await sysop.request({"type": "clear_queue"})
        assert reply["cleared"] == 1, reply
        await cancelled(bob, bob_chat)
        for bus in (alice, bob, sysop):  # the whole queue went: everybody hears it
            await bus.expect(
                "sysop_message", lambda m: m["message"] == "The queue has been cleared"
            )
        await alice.expect("queue_update", lambda m: m["depth"] == 0)

        # The job on a worker was never touched: its answer comes as usual.
        result = await alice.expect("query_result", lambda m: m["query_id"] == running)
        assert result["result"]
        assert not any(m.get("query_id") == running and m["type"] == "error" for m in alice.seen)

    async with httpx.AsyncClient(
        base_url=broker.url, headers={"Authorization": f"Bearer {realm.sysop_key}"}
    ) as admin:
        log = (await admin.get("/api/v1/audit")).json()
    clears = [(e["target"], e["detail"]) for e in log if e["action"] == "clear_queue"]
    assert clears == [
        ("", {"realm": None, "cleared": 1}),
        (alice_guid, {"realm": None, "cleared": 1}),
        ("", {"realm": "$SPEECH", "cleared": 2}),
    ]
    assert all(e["actor"] == "hal" for e in log if e["action"] == "clear_queue")


async def test_only_a_sysop_clears_the_queue(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=3)
    await realm.add_worker("w1", rentahal_stub, max_concurrency=1)
    broker = realm.broker
    async with broker.bus(cookie=await broker.guest_cookie()) as guest:
        await guest.expect("user_info")
        await dispatched(guest, await submit(guest, "first"))
        waiting = await submit(guest, "second")
        for message in ({"type": "clear_queue"}, {"type": "clear_queue", "realm": "$CHAT"}):
            reply = await guest.request(message)
            assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        # Still waiting, so still cancellable by its owner.
        reply = await guest.request({"type": "cancel_query", "query_id": waiting})
        assert reply["type"] == "ok", reply


async def test_rest_clears_the_queue_for_a_sysop_only(
    realm: Realm, rentahal_stub: StubServer
) -> None:
    await rentahal_stub.reset()
    await rentahal_stub.configure(latency=3)
    await realm.add_worker("w1", rentahal_stub, max_concurrency=1)
    broker = realm.broker
    cookie = await broker.guest_cookie()
    async with broker.bus(cookie=cookie) as guest:
        guest_guid = (await guest.expect("user_info"))["data"]["guid"]
        await dispatched(guest, await submit(guest, "first"))
        waiting = await submit(guest, "second")
        async with httpx.AsyncClient(base_url=broker.url) as http:
            as_guest = {"Cookie": f"rentahal_session={cookie}"}
            refused = await http.delete("/api/v1/queue", headers=as_guest)
            assert refused.status_code == 403, refused.text
            sysop = {"Authorization": f"Bearer {realm.sysop_key}"}
            bad = await http.delete("/api/v1/queue", params={"realm": "chat"}, headers=sysop)
            assert bad.status_code == 422, bad.text
            cleared = await http.delete(
                "/api/v1/queue", params={"user_id": guest_guid}, headers=sysop
            )
            assert cleared.status_code == 200 and cleared.json() == {"cleared": 1}, cleared.text
        await cancelled(guest, waiting)
