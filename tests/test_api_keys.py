"""API keys: created, listed and revoked by their owner; scoped on REST and the bus."""

from __future__ import annotations

import httpx
import pytest

from rentahal.testing.process import StubServer
from tests.conftest import Realm


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_key_lifecycle_and_scopes(realm: Realm, rentahal_stub: StubServer) -> None:
    await rentahal_stub.reset()
    await realm.add_worker("w1", rentahal_stub)
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        made = await http.post(
            "/api/v1/keys",
            json={"name": "chat-bot", "scopes": ["chat"]},
            headers=bearer(realm.sysop_key),
        )
        assert made.status_code == 201, made.text
        chat_key, key_id = made.json()["key"], made.json()["id"]
        assert made.json()["scopes"] == ["chat"] and chat_key.startswith(made.json()["prefix"])

        listed = (await http.get("/api/v1/keys", headers=bearer(realm.sysop_key))).json()
        assert [k["name"] for k in listed] == ["default", "chat-bot"]
        assert all("key" not in k for k in listed)  # the secret is shown once, never again

        # A chat key makes chat queries, not others, and cannot act as sysop.
        chat = await http.post(
            "/api/v1/queries",
            params={"wait": 10},
            json={"prompt": "hi", "query_type": "chat"},
            headers=bearer(chat_key),
        )
        assert chat.status_code == 202 and chat.json()["query"]["result"] == "echo: hi"
        vision = await http.post(
            "/api/v1/queries",
            json={"prompt": "look", "query_type": "vision"},
            headers=bearer(chat_key),
        )
        assert vision.status_code == 403 and "vision" in vision.json()["detail"]["message"]
        assert (await http.get("/api/v1/workers", headers=bearer(chat_key))).status_code == 403
        wider = await http.post("/api/v1/keys", json={"scopes": ["*"]}, headers=bearer(chat_key))
        assert wider.status_code == 403

        # Revoked: refused at once.
        revoked = await http.delete(f"/api/v1/keys/{key_id}", headers=bearer(realm.sysop_key))
        assert revoked.status_code == 204
        assert (await http.get("/api/v1/me", headers=bearer(chat_key))).status_code == 401
        again = await http.delete(f"/api/v1/keys/{key_id}", headers=bearer(realm.sysop_key))
        assert again.status_code == 404


@pytest.mark.shared_realm
async def test_the_sysop_lists_and_revokes_anyones_keys(realm: Realm) -> None:
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        cookie = await realm.broker.guest_cookie()
        guest = {"Cookie": f"rentahal_session={cookie}", "Origin": realm.broker.url}
        me = (await http.get("/api/v1/me", headers=guest)).json()
        made = await http.post("/api/v1/keys", json={"name": "bot"}, headers=guest)
        assert made.status_code == 201, made.text
        theirs = await http.get(f"/api/v1/users/{me['guid']}/keys", headers=bearer(realm.sysop_key))
        assert [k["name"] for k in theirs.json()] == ["bot"]
        own_only = await http.get(f"/api/v1/users/{me['guid']}/keys", headers=guest)
        assert own_only.status_code == 403  # not even one's own, by this sysop route
        revoked = await http.delete(
            f"/api/v1/keys/{made.json()['id']}", headers=bearer(realm.sysop_key)
        )
        assert revoked.status_code == 204
        assert (await http.get("/api/v1/me", headers=bearer(made.json()["key"]))).status_code == 401
        missing = await http.get(f"/api/v1/users/{'0' * 32}/keys", headers=bearer(realm.sysop_key))
        assert missing.status_code == 404
        audit = (await http.get("/api/v1/audit", headers=bearer(realm.sysop_key))).json()
        assert audit[0]["action"] == "revoke_api_key" and audit[0]["target"] == made.json()["id"]


@pytest.mark.shared_realm  # keys and a guest of its own; no vision worker anywhere
@pytest.mark.parametrize("scopes", [["chat"], ["vision", "speech"]])
async def test_bus_honours_key_scopes(realm: Realm, scopes: list[str]) -> None:
    async with httpx.AsyncClient(base_url=realm.broker.url) as http:
        made = await http.post(
            "/api/v1/keys", json={"scopes": scopes}, headers=bearer(realm.sysop_key)
        )
        key = made.json()["key"]
    async with realm.broker.bus(api_key=key) as bus:
        info = await bus.expect("user_info")
        assert info["data"]["role"] == "sysop"
        # A sysop's key without the admin scope gets no sysop powers on the bus either.
        refused = await bus.request({"type": "get_stats"})
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        vision = await bus.request(
            {
                "type": "submit_query",
                "query": {"prompt": "look", "query_type": "vision", "image": "aGk="},
            }
        )
        expected = "no_worker" if "vision" in scopes else "forbidden"
        assert vision["type"] == "error" and vision["code"] == expected
