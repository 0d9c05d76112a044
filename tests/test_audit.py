"""Every sysop action lands in the audit log, readable by sysops only."""

from __future__ import annotations

import httpx

from rentahal.testing.process import StubServer
from tests.conftest import Realm


async def test_sysop_actions_are_audited(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    broker = realm.broker
    sysop_headers = {"Authorization": f"Bearer {realm.sysop_key}"}
    cookie = await broker.guest_cookie()
    async with broker.bus(cookie=cookie) as guest, broker.bus(api_key=realm.sysop_key) as sysop:
        guid = (await guest.expect("user_info"))["data"]["guid"]
        added = await sysop.request(
            {
                "type": "add_worker",
                "worker": {"name": "w1", "address": rentahal_stub.address, "kind": "rentahal"},
            }
        )
        assert added["type"] == "ok"
        said = await sysop.request({"type": "sysop_message", "message": "maintenance at noon"})
        assert said["type"] == "ok"
        banned = await sysop.request({"type": "ban_user", "user_guid": guid})
        assert banned["type"] == "ok"

    async with httpx.AsyncClient(base_url=broker.url, headers=sysop_headers) as admin:
        pool = {"name": "$AUDITED", "type": "chat", "members": ["w1"], "strategy": "health"}
        assert (await admin.post("/api/v1/pools", json=pool)).status_code == 201
        patched = await admin.patch("/api/v1/realms/$CHAT", json={"strategy": "least_busy"})
        assert patched.status_code == 200
        log = (await admin.get("/api/v1/audit")).json()

    assert [(e["action"], e["target"]) for e in log] == [
        ("update_realm", "$CHAT"),
        ("add_pool", "$AUDITED"),
        ("ban_user", guid),
        ("sysop_message", ""),
        ("add_worker", "w1"),
    ]
    assert {e["actor"] for e in log} == {"hal"} and all(e["actor_id"] for e in log)
    assert log[0]["detail"] == {"strategy": "least_busy"}
    assert log[3]["detail"] == {"message": "maintenance at noon"}
    assert log[0]["at"] >= log[-1]["at"]

    async with httpx.AsyncClient(base_url=broker.url) as anonymous:
        assert (await anonymous.get("/api/v1/audit")).status_code == 401
        visitor = await broker.guest_cookie()
        refused = await anonymous.get(
            "/api/v1/audit", headers={"Cookie": f"rentahal_session={visitor}"}
        )
        assert refused.status_code == 403
