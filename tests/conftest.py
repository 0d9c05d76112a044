"""Shared fixtures: the broker as a real process, stub workers, sysop and guest clients."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from rentahal.config import load_settings
from rentahal.store import Role, Store
from rentahal.testing.broker import BrokerProcess
from rentahal.testing.process import StubServer
from tests.postgres import PgDatabase, pg_admin_url

if TYPE_CHECKING:
    from tests.browser import Recorder

# Health checks every 0.2 s so health tests run in a second, not minutes.
FAST_ENV = {"RENTAHAL_HEALTH_CHECK_INTERVAL": "0.2"}


@dataclass
class Realm:
    """A running broker with a sysop key."""

    broker: BrokerProcess
    sysop_key: str

    async def add_worker(self, name: str, stub: StubServer, **fields: object) -> None:
        async with self.broker.bus(api_key=self.sysop_key) as sysop:
            reply = await sysop.request(
                {
                    "type": "add_worker",
                    "worker": {"name": name, "address": stub.address, "kind": stub.protocol}
                    | fields,
                }
            )
            assert reply["type"] == "ok", reply


async def create_sysop(
    data_dir: Path, nickname: str = "hal", *, database_url: str | None = None
) -> str:
    """Make a sysop in the broker's store (what `admin create-sysop` does; the CLI itself is
    tested in test_cli.py) and return its API key."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    store = await Store(settings.resolved_database_url).open()
    try:
        user = await store.users.create(role=Role.SYSOP, nickname=nickname)
        return await store.credentials.create_api_key(user.id)
    finally:
        await store.close()


@pytest_asyncio.fixture(loop_scope="session")
async def realm(tmp_path: Path) -> AsyncIterator[Realm]:
    """A fresh broker per test (its own SQLite database)."""
    key = await create_sysop(tmp_path)
    async with BrokerProcess(tmp_path, env=FAST_ENV) as broker:
        yield Realm(broker, key)
    print(f"--- broker output ---\n{broker.output}")  # shown by pytest when a test fails


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ollama_stub() -> AsyncIterator[StubServer]:
    async with StubServer("ollama", models=["llama3"]) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def openai_stub() -> AsyncIterator[StubServer]:
    async with StubServer("openai", models=["gpt-4o-mini"]) as stub:
        yield stub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rentahal_stub() -> AsyncIterator[StubServer]:
    async with StubServer("rentahal") as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_pg_url() -> AsyncIterator[str]:
    """A URL of a brand-new, empty PostgreSQL database, dropped after the test."""
    database = PgDatabase(pg_admin_url(), f"rentahal_test_{secrets.token_hex(8)}")
    await database.create()
    try:
        yield database.store_url
    finally:
        await database.drop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium, shared by a module's page tests."""
    from tests.browser import launch

    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture
async def desktop(browser: Browser, realm: Realm) -> AsyncIterator[tuple[Page, Recorder]]:
    """The page in a fresh desktop-sized browser profile, connected to `realm`'s broker."""
    from tests.browser import open_page

    context, page, recorder = await open_page(browser, realm)
    try:
        yield page, recorder
    finally:
        await context.close()
