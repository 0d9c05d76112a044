"""The Gmail intent end to end: a real broker process connects a user's Gmail through the
Google stub (a real process too) with the OAuth 2.0 web-server flow and PKCE, over HTTP as a
browser would, and the intent then reads the mail with the tokens the broker kept.

The intent's handler is called here, in the test process, with an `IntentCall` on the
broker's own database and secret key, as the broker would call it: what it finds there is
only what the broker's routes stored.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.engine import make_url

from rentahal.config import Settings, load_settings
from rentahal.core.errors import ErrorCode
from rentahal.core.specs import QuerySpec
from rentahal.intents.base import Answer, IntentCall, IntentError
from rentahal.intents.gmail import GMAIL_READONLY, PROVIDER, GmailIntent
from rentahal.store import Query, Store, utcnow
from rentahal.store.models import OAuthState
from rentahal.store.oauth_tokens import STATE_TTL, TokenCipher
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from rentahal.testing.stubs.google import ACCOUNT_EMAIL, CLIENT_ID, CLIENT_SECRET
from tests.conftest import Realm

SECRET_KEY = "test-broker-secret-key-for-the-gmail-tests-0123456789"
CONNECT = "/api/v1/gmail/connect"
CALLBACK = "/api/v1/gmail/callback"


def google_settings(stub: StubServer) -> dict[str, str]:
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_auth_endpoint": f"{stub.url}/o/oauth2/v2/auth",
        "google_token_endpoint": f"{stub.url}/token",
        "google_revoke_endpoint": f"{stub.url}/revoke",
        "gmail_api_endpoint": stub.url,
    }


@dataclass
class GmailRealm:
    """A broker set up for Gmail against the stub, and its database opened from here."""

    broker: BrokerProcess
    stub: StubServer
    settings: Settings
    store: Store

    @property
    def cipher(self) -> TokenCipher:
        return TokenCipher(SECRET_KEY)

    @property
    def database(self) -> Path:
        database = make_url(self.settings.resolved_database_url).database
        assert database is not None
        return Path(database)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def google_stub() -> AsyncIterator[StubServer]:
    async with StubServer("google") as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def stub(google_stub: StubServer) -> StubServer:
    await google_stub.reset()
    return google_stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gmail(
    tmp_path_factory: pytest.TempPathFactory, google_stub: StubServer
) -> AsyncIterator[GmailRealm]:
    data_dir = tmp_path_factory.mktemp("gmail-broker")
    configured = google_settings(google_stub)
    env = {f"RENTAHAL_{k.upper()}": v for k, v in configured.items()}
    env["RENTAHAL_SECRET_KEY"] = SECRET_KEY
    async with BrokerProcess(data_dir, env=env) as broker:
        settings = load_settings(data_dir=data_dir, secret_key=SECRET_KEY, **configured)
        store = await Store(settings.resolved_database_url).open()
        try:
            yield GmailRealm(broker, google_stub, settings, store)
        finally:
            await store.close()
    print(f"--- broker output ---\n{broker.output}")  # shown by pytest when a test fails


# --------------------------------------------------------------------------- helpers


@dataclass
class Browser:
    """A signed-in browser: the guest session a page load gives, and its user's id."""

    base: str
    cookie: str
    user_id: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Cookie": f"rentahal_session={self.cookie}", **extra}

    async def get(self, path_or_url: str, **params: str) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else f"{self.base}{path_or_url}"
        async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
            return await http.get(url, params=params or None, headers=self.headers())


async def browser(broker: BrokerProcess) -> Browser:
    cookie = await broker.guest_cookie()
    async with httpx.AsyncClient(trust_env=False) as http:
        me = await http.get(
            f"{broker.url}/api/v1/me", headers={"Cookie": f"rentahal_session={cookie}"}
        )
    me.raise_for_status()
    return Browser(broker.url, cookie, me.json()["guid"])


async def consent(user: Browser) -> tuple[str, dict[str, str]]:
    """Connect → Google's consent page → the redirect back; returns the callback URL it names
    and the authorization request's parameters (the callback is not called yet)."""
    start = await user.get(CONNECT)
    assert start.status_code == 303, start.text
    authorization = start.headers["location"]
    async with httpx.AsyncClient(trust_env=False) as http:
        back = await http.get(authorization)  # the browser, without the broker's cookie
    assert back.status_code == 302, back.text
    params = {k: v[0] for k, v in parse_qs(urlsplit(authorization).query).items()}
    return back.headers["location"], params


async def connect(user: Browser) -> httpx.Response:
    callback, _ = await consent(user)
    return await user.get(callback)


async def google(stub: StubServer, method: str, path: str, payload: object = None) -> Any:
    async with httpx.AsyncClient(base_url=stub.url, trust_env=False) as http:
        response = await http.request(method, f"/_stub/google{path}", json=payload)
    response.raise_for_status()
    return response.json() if response.content else None


async def logged(stub: StubServer, path: str) -> list[dict[str, Any]]:
    """The stub's requests to `path`, with their query and form."""
    return [r for r in await google(stub, "GET", "/requests") if r["path"] == path]


async def refused_submit(spec: QuerySpec) -> tuple[Query, int]:
    raise AssertionError("the Gmail intent queues no query")


async def ask(user_id: str, settings: Settings, store: Store) -> str:
    """Run the intent as the broker would for `user_id`; its answer's text."""
    user = await store.users.get(user_id)
    assert user is not None
    async with httpx.AsyncClient(trust_env=False) as http:
        call = IntentCall(
            text="",
            utterance="read my email",
            user=user,
            speak=True,
            units="metric",
            location=None,
            image=None,
            settings=settings,
            store=store,
            http=http,
            secret_key=SECRET_KEY,
            submit_query=refused_submit,
        )
        outcome = await GmailIntent().handle(call)
    assert isinstance(outcome, Answer)
    return outcome.text


async def read_mail(gmail: GmailRealm, user: Browser) -> str:
    return await ask(user.user_id, gmail.settings, gmail.store)


async def read_mail_fails(gmail: GmailRealm, user: Browser) -> IntentError:
    with pytest.raises(IntentError) as failure:
        await read_mail(gmail, user)
    return failure.value


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def bearer(request: dict[str, Any]) -> str:
    return str(request["headers"].get("authorization", "")).removeprefix("Bearer ")


# --------------------------------------------------------------------------- connecting


async def test_connect_runs_the_pkce_flow_and_keeps_only_sealed_tokens(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    callback, asked = await consent(user)

    # The broker sent the browser to Google's consent page with PKCE and a state.
    assert asked["client_id"] == CLIENT_ID
    assert asked["redirect_uri"] == f"{gmail.broker.url}{CALLBACK}"
    assert asked["response_type"] == "code"
    assert asked["scope"] == GMAIL_READONLY
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["code_challenge"]) == 43
    assert asked["access_type"] == "offline"
    assert asked["prompt"] == "consent"
    assert len(asked["state"]) >= 32
    assert "client_secret" not in asked
    back = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert callback.startswith(f"{gmail.broker.url}{CALLBACK}?")
    assert back["state"] == asked["state"]

    page = await user.get(callback)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "Gmail is connected" in page.text and ACCOUNT_EMAIL in page.text
    assert "<script" not in page.text and "style" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

    # The code was exchanged once, with the verifier whose S256 is the challenge.
    (exchange,) = await logged(stub, "/token")
    form = {k: v[0] for k, v in exchange["form"].items()}
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == back["code"]
    assert form["redirect_uri"] == asked["redirect_uri"]
    assert form["client_id"] == CLIENT_ID and form["client_secret"] == CLIENT_SECRET
    assert s256(form["code_verifier"]) == asked["code_challenge"]

    status = await user.get("/api/v1/gmail")
    assert status.json() == {"configured": True, "connected": True, "email": ACCOUNT_EMAIL}

    # The row is there and says nothing in clear: not in the table, not in the files.
    issued = await google(stub, "GET", "/tokens")
    access_token = issued["access_tokens"][0]["access_token"]
    refresh_token = issued["grants"][0]["refresh_token"]
    secrets = [access_token, refresh_token, ACCOUNT_EMAIL, GMAIL_READONLY, form["code_verifier"]]
    with sqlite3.connect(gmail.database) as db:
        rows = db.execute(
            "SELECT provider, sealed FROM oauth_tokens WHERE user_id = ?", (user.user_id,)
        ).fetchall()
        pending = db.execute(
            "SELECT count(*) FROM oauth_states WHERE user_id = ?", (user.user_id,)
        ).fetchone()
    assert [provider for provider, _ in rows] == [PROVIDER]
    assert not any(secret in rows[0][1] for secret in secrets)
    assert pending == (0,)  # the state was used up
    files = [gmail.database, gmail.database.with_name(gmail.database.name + "-wal")]
    on_disk = b"".join(f.read_bytes() for f in files if f.exists())
    assert not any(secret.encode() in on_disk for secret in secrets)
    # …nor in the broker's log.
    assert not any(s in gmail.broker.output for s in (access_token, refresh_token, CLIENT_SECRET))

    # With the broker's key, the row opens to what Google issued.
    grant = await gmail.store.oauth_tokens.get(user.user_id, PROVIDER, gmail.cipher)
    assert grant is not None
    assert (grant.access_token, grant.refresh_token) == (access_token, refresh_token)
    assert grant.email == ACCOUNT_EMAIL and grant.scopes == {GMAIL_READONLY}
    assert grant.expires_at is not None and grant.expires_at > utcnow() + timedelta(minutes=50)
    assert access_token not in repr(grant) and refresh_token not in repr(grant)
    # …and another key cannot open it.
    other = TokenCipher("some-other-broker-key")
    assert await gmail.store.oauth_tokens.get(user.user_id, PROVIDER, other) is None


async def test_a_state_is_single_use_and_only_for_the_user_who_started(
    gmail: GmailRealm, stub: StubServer
) -> None:
    ann, bob = await browser(gmail.broker), await browser(gmail.broker)
    callback, _ = await consent(ann)
    code = parse_qs(urlsplit(callback).query)["code"][0]

    stolen = await bob.get(callback)  # Bob's session, Ann's state and code
    assert stolen.status_code == 400
    assert "not valid" in stolen.text
    async with httpx.AsyncClient(trust_env=False) as http:
        anonymous = await http.get(callback)
    assert anonymous.status_code == 401
    assert "not signed in" in anonymous.text
    forged = await ann.get(CALLBACK, code=code, state="forged-state-" + "x" * 30)
    assert forged.status_code == 400
    assert await logged(stub, "/token") == []  # none of those reached Google

    assert (await ann.get(callback)).status_code == 200  # Ann's own is still good
    replayed = await ann.get(callback)
    assert replayed.status_code == 400 and "already used" in replayed.text
    assert len(await logged(stub, "/token")) == 1
    assert (await bob.get("/api/v1/gmail")).json()["connected"] is False
    assert (await ann.get("/api/v1/gmail")).json()["connected"] is True


async def test_a_state_lapses_after_ten_minutes(gmail: GmailRealm, stub: StubServer) -> None:
    user = await browser(gmail.broker)
    callback, _ = await consent(user)
    async with gmail.store.db.session() as session:  # the user left the tab open too long
        await session.execute(
            update(OAuthState)
            .where(OAuthState.user_id == user.user_id)
            .values(created_at=utcnow() - STATE_TTL - timedelta(seconds=1))
        )
        await session.commit()

    late = await user.get(callback)

    assert late.status_code == 400 and "expired" in late.text
    assert await logged(stub, "/token") == []
    assert not await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)


async def test_refused_consent_connects_nothing(gmail: GmailRealm, stub: StubServer) -> None:
    user = await browser(gmail.broker)
    await google(stub, "POST", "/config", {"deny_consent": True})
    callback, asked = await consent(user)
    back = parse_qs(urlsplit(callback).query)
    assert back["error"] == ["access_denied"] and back["state"] == [asked["state"]]
    assert "code" not in back

    page = await user.get(callback)
    assert page.status_code == 400
    assert "did not allow" in page.text
    assert await logged(stub, "/token") == []
    assert not await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)
    # The state is spent: it cannot be completed later with a code.
    late = await user.get(CALLBACK, code="4/0Astub-late", state=asked["state"])
    assert late.status_code == 400 and await logged(stub, "/token") == []


async def test_a_grant_without_gmail_access_is_refused_and_revoked(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    await google(stub, "POST", "/config", {"granted_scope": "openid email"})
    page = await connect(user)
    assert page.status_code == 400
    assert "read your email" in page.text
    assert not await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)
    (revocation,) = await logged(stub, "/revoke")
    issued = await google(stub, "GET", "/tokens")
    assert revocation["form"]["token"] == [issued["grants"][0]["refresh_token"]]
    assert issued["grants"][0]["revoked"] is True


# --------------------------------------------------------------------------- reading


async def test_the_summary_names_only_unread_inbox_mail(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200

    text = await read_mail(gmail, user)

    assert text.startswith(
        "You have 3 unread emails. 1: from Ann Smith, subject Lunch on Friday: Are we still "
        "on for lunch at noon? I booked a table at the usual place & asked for the one by "
        "the window. 2: from billing@example.net, subject Your invoice #4521: Your invoice is "
        "ready and due on 30 June. Thank you for being a customer. 3: from Zoë Müller, "
        "subject Re: Holiday plans für August: Sounds great! I looked at the cabins"
    ), text
    assert text.endswith("…")
    assert len(text.split("3: from", 1)[1]) < 200  # the long snippet was trimmed
    for absent in ("Bob Jones", "Quarterly", "Prize", "WON", "Carol", "newsletter"):
        assert absent not in text
    grant = await gmail.store.oauth_tokens.get(user.user_id, PROVIDER, gmail.cipher)
    assert grant is not None and grant.access_token not in text

    (listing,) = await logged(stub, "/gmail/v1/users/me/messages")
    assert listing["query"] == {"q": ["is:unread"], "labelIds": ["INBOX"], "maxResults": ["5"]}
    assert bearer(listing) == grant.access_token
    fetched = [r for r in await google(stub, "GET", "/requests") if "/messages/" in r["path"]]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in fetched) == [
        "18f3a1c2d4e5f601",
        "18f3a1c2d4e5f603",
        "18f3a1c2d4e5f605",
    ]
    for request in fetched:
        assert request["query"] == {
            "format": ["metadata"],
            "metadataHeaders": ["From", "Subject", "Date"],
        }
        assert bearer(request) == grant.access_token


async def test_an_empty_inbox_and_a_full_one(gmail: GmailRealm, stub: StubServer) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    read = {"id": "a0", "labels": ["INBOX"], "sender": "Al <al@example.com>", "subject": "Hi"}
    await google(stub, "PUT", "/mailbox", {"messages": [read]})
    assert await read_mail(gmail, user) == "You have no unread email."

    unread = [
        {
            "id": f"b{n}",
            "labels": ["INBOX", "UNREAD"],
            "sender": f"Sender {n} <s{n}@example.com>",
            "subject": f"Note {n}" if n != 2 else "",
            "snippet": f"Text {n}",
            "internal_date": 1_750_000_000_000 + n,
        }
        for n in range(7)
    ]
    await google(stub, "PUT", "/mailbox", {"messages": [read, *unread]})
    text = await read_mail(gmail, user)
    assert text == (
        "You have about 7 unread emails. The newest 5: "
        "1: from Sender 6, subject Note 6: Text 6. 2: from Sender 5, subject Note 5: Text 5. "
        "3: from Sender 4, subject Note 4: Text 4. 4: from Sender 3, subject Note 3: Text 3. "
        "5: from Sender 2, no subject: Text 2."
    )


async def test_an_expired_access_token_is_refreshed_transparently(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    store, cipher = gmail.store.oauth_tokens, gmail.cipher
    old = await store.get(user.user_id, PROVIDER, cipher)
    assert old is not None
    # An hour later: Google no longer takes the token, and the broker's record says so too.
    await google(stub, "POST", "/expire")
    await store.save(
        user.user_id, PROVIDER, replace(old, expires_at=utcnow() - timedelta(minutes=1)), cipher
    )
    await google(stub, "DELETE", "/requests")

    assert (await read_mail(gmail, user)).startswith("You have 3 unread emails.")

    (renewal,) = await logged(stub, "/token")
    form = {k: v[0] for k, v in renewal["form"].items()}
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == old.refresh_token
    assert form["client_id"] == CLIENT_ID and form["client_secret"] == CLIENT_SECRET
    fresh = await store.get(user.user_id, PROVIDER, cipher)
    assert fresh is not None
    assert fresh.access_token != old.access_token
    assert fresh.refresh_token == old.refresh_token  # Google sends none back; it is kept
    assert fresh.email == ACCOUNT_EMAIL
    assert fresh.expires_at is not None and fresh.expires_at > utcnow() + timedelta(minutes=50)
    gmail_calls = [r for r in await google(stub, "GET", "/requests") if "/gmail/" in r["path"]]
    assert gmail_calls and all(bearer(r) == fresh.access_token for r in gmail_calls)


async def test_a_token_google_refuses_early_is_refreshed_once(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    await google(stub, "POST", "/expire")  # still valid by the broker's clock
    await google(stub, "DELETE", "/requests")

    assert (await read_mail(gmail, user)).startswith("You have 3 unread emails.")
    listings = await logged(stub, "/gmail/v1/users/me/messages")
    assert len(listings) == 2  # refused, then again with the new token
    assert len(await logged(stub, "/token")) == 1
    assert bearer(listings[0]) != bearer(listings[1])


async def test_a_revoked_grant_is_forgotten_and_the_user_told_to_connect_again(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    await google(stub, "POST", "/revoke_all")  # the user removed access at Google
    await google(stub, "DELETE", "/requests")

    failure = await read_mail_fails(gmail, user)

    assert failure.code == ErrorCode.NOT_CONNECTED
    assert "expired or was revoked" in failure.message and CONNECT in failure.message
    (renewal,) = await logged(stub, "/token")
    assert renewal["form"]["grant_type"] == ["refresh_token"]
    assert not await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)
    assert (await user.get("/api/v1/gmail")).json()["connected"] is False
    # Reconnecting works again.
    assert (await connect(user)).status_code == 200
    assert (await read_mail(gmail, user)).startswith("You have 3 unread emails.")


async def test_not_connected(gmail: GmailRealm, stub: StubServer) -> None:
    user = await browser(gmail.broker)
    failure = await read_mail_fails(gmail, user)
    assert failure.code == ErrorCode.NOT_CONNECTED
    assert failure.message == f"Gmail is not connected: open {CONNECT} to connect it."
    assert await google(stub, "GET", "/requests") == []
    assert (await user.get("/api/v1/gmail")).json() == {
        "configured": True,
        "connected": False,
        "email": None,
    }


async def test_gmail_failing_is_an_upstream_error(gmail: GmailRealm, stub: StubServer) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    await stub.configure(fail_status=500)

    failure = await read_mail_fails(gmail, user)

    assert failure.code == ErrorCode.UPSTREAM_ERROR
    assert failure.message == (
        "Gmail answered HTTP 500 (Internal error encountered). Try again later."
    )
    assert await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)  # kept: not its fault
    await stub.configure(fail_status=None)
    assert (await read_mail(gmail, user)).startswith("You have 3 unread emails.")


async def test_asked_for_in_words_over_the_bus(gmail: GmailRealm, stub: StubServer) -> None:
    """The broker itself finds the intent by its words and answers with the summary."""
    user = await browser(gmail.broker)
    async with gmail.broker.bus(cookie=user.cookie) as bus:
        refused = await bus.request({"type": "intent", "text": "read my email"})
        assert refused["type"] == "error", refused
        assert refused["code"] == "not_connected" and CONNECT in refused["message"]

        assert (await connect(user)).status_code == 200
        reply = await bus.request({"type": "intent", "text": "any new mail for me?"})
        assert reply["type"] == "intent_result", reply
        assert reply["intent"] == "gmail"
        assert reply["answer"].startswith("You have 3 unread emails. 1: from Ann Smith")


# --------------------------------------------------------------------------- disconnecting


async def test_disconnect_revokes_at_google_and_forgets(
    gmail: GmailRealm, stub: StubServer
) -> None:
    user = await browser(gmail.broker)
    assert (await connect(user)).status_code == 200
    grant = await gmail.store.oauth_tokens.get(user.user_id, PROVIDER, gmail.cipher)
    assert grant is not None

    async with httpx.AsyncClient(base_url=gmail.broker.url, trust_env=False) as http:
        cross_site = await http.delete(
            "/api/v1/gmail", headers=user.headers(Origin="https://evil.example")
        )
        assert cross_site.status_code == 403
        assert await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)
        assert await logged(stub, "/revoke") == []

        gone = await http.delete("/api/v1/gmail", headers=user.headers(Origin=gmail.broker.url))
        assert gone.status_code == 204

    (revocation,) = await logged(stub, "/revoke")
    assert revocation["form"]["token"] == [grant.refresh_token]
    assert "client_secret" not in revocation["form"]
    issued = await google(stub, "GET", "/tokens")
    assert issued["grants"][0]["revoked"] is True
    assert not any(t["live"] for t in issued["access_tokens"])
    assert not await gmail.store.oauth_tokens.exists(user.user_id, PROVIDER)
    assert (await user.get("/api/v1/gmail")).json()["connected"] is False
    assert (await read_mail_fails(gmail, user)).code == ErrorCode.NOT_CONNECTED


# --------------------------------------------------------------------------- not set up


async def test_without_a_google_client_gmail_is_not_configured(realm: Realm) -> None:
    """The plain realm has no google_client_id/secret."""
    user = await browser(realm.broker)
    refused = await user.get(CONNECT)
    assert refused.status_code == 503
    assert refused.json()["detail"]["code"] == "not_configured"
    assert "google_client_id" in refused.json()["detail"]["message"]
    status = await user.get("/api/v1/gmail")
    assert status.json() == {"configured": False, "connected": False, "email": None}

    settings = load_settings(data_dir=realm.broker.data_dir)
    assert GmailIntent().available(settings) is False
    assert GmailIntent().available(settings.model_copy(update={"google_client_id": "x"})) is False
    store = await Store(settings.resolved_database_url).open()
    try:
        with pytest.raises(IntentError) as failure:
            await ask(user.user_id, settings, store)
    finally:
        await store.close()
    assert failure.value.code == ErrorCode.NOT_CONFIGURED
    assert "google_client_secret" in failure.value.message


def test_the_intent_declares_its_words() -> None:
    intent = GmailIntent()
    settings = Settings(google_client_id=CLIENT_ID, google_client_secret=SecretStr(CLIENT_SECRET))
    assert intent.name == "gmail"
    assert intent.triggers == ("gmail", "email", "mail")
    assert {"read my email", "check my mail", "any new mail", "unread email"} <= set(
        intent.keywords
    )
    assert intent.description
    assert intent.available(settings) is True
