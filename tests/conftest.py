"""Shared fixtures: the broker as a real process, stub workers, sysop and guest clients."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings
from playwright.async_api import Browser, Page, async_playwright

from rentahal.config import load_settings
from rentahal.store import Role, Store
from rentahal.testing.broker import BrokerProcess, base_env, take_tracebacks
from rentahal.testing.forkserver import ForkServer
from rentahal.testing.process import ServerProcess, StubServer
from tests.postgres import PgDatabase, pg_admin_url

if TYPE_CHECKING:
    from tests.browser import Recorder

# --- Hypothesis and schemathesis: the same examples every run, unless asked for a deep hunt ---

# RENTAHAL_TEST_FUZZ=deep: random examples (a new run finds new ones), each generated test
# FUZZ_SCALE times as many (default 10 when deep); Hypothesis keeps failures in .hypothesis/.
DEEP = os.environ.get("RENTAHAL_TEST_FUZZ", "ci") == "deep"
FUZZ_SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "10" if DEEP else "1")))
# "ci" is Hypothesis' own profile of that name (derandomized: examples derived from each test's
# code, no example database; no deadline; too_slow allowed) with the example count pinned.
settings.register_profile(
    "ci", settings.get_profile("ci"), max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", derandomize=False, deadline=None, max_examples=1000, print_blob=True
)
settings.load_profile("deep" if DEEP else "ci")

# Health checks every 0.2 s so health tests run in a second, not minutes.
FAST_ENV = {"RENTAHAL_HEALTH_CHECK_INTERVAL": "0.2"}


# --- brokers forked from one that has imported everything ---------------------------------


@pytest.fixture(scope="session", autouse=True)
def _fork_server() -> Iterator[None]:
    """Every broker and stub server of the session is forked from a process that has imported
    the broker's code once (rentahal/testing/forkserver.py): a broker starts in ~0.3 s instead
    of ~1.5. RENTAHAL_TEST_FORKSERVER=0 starts each as a plain `python -m` instead."""
    if os.environ.get("RENTAHAL_TEST_FORKSERVER", "1") == "0":
        yield
        return
    server = ForkServer(env=base_env())
    ServerProcess.fork_server = server
    try:
        yield
    finally:
        ServerProcess.fork_server = None
        server.close()


# --- parallel runs (pytest-xdist, `-n`) ------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With `--dist loadgroup`, a module's tests stay on one worker, so what they share
    (a module's broker, browser and stubs) is made once; and the modules marked
    `offline_models` (they run whisper, piper, SmolLM2, torch) share one worker, since two of
    them at once on a 2-core machine starve each other past their timeouts."""
    for item in items:
        heavy = item.get_closest_marker("offline_models") is not None
        group = "offline_models" if heavy else item.nodeid.partition("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


# --- no broker may log a traceback --------------------------------------------------------


def _claim_broker_tracebacks(node: pytest.Item | pytest.Module, when: str) -> None:
    """Fail unless `node` is marked `allow_broker_tracebacks(reason=...)`: every broker process
    (`realm`, a module's own broker, one started in the test) is scanned as it logs."""
    found = take_tracebacks()
    allowed = node.get_closest_marker("allow_broker_tracebacks")
    if allowed is not None:
        if not (allowed.kwargs.get("reason") or allowed.args):
            pytest.fail("@pytest.mark.allow_broker_tracebacks needs a reason=", pytrace=False)
        return
    if found:
        pytest.fail(
            f"a broker logged {len(found)} traceback(s) {when} (a path nobody handled; if the "
            "test provokes them on purpose, mark it allow_broker_tracebacks(reason=...)):\n\n"
            + "\n\n".join(f"[{t.broker}]\n{t.text}" for t in found),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_broker_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Torn down after the test's other fixtures, so a broker they stop has said its last.
    (A shared broker's lines are read as they come: one logged as a test ends may be
    blamed on the next.)"""
    yield
    _claim_broker_tracebacks(request.node, "during this test")


@pytest.fixture(scope="module", autouse=True)
def _no_broker_tracebacks_in_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """The same for what a module's shared brokers log as they start and stop."""
    yield
    _claim_broker_tracebacks(request.node, "while this module's shared brokers ran or stopped")


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


@pytest.fixture
def realm(request: pytest.FixtureRequest) -> Realm:
    """A running broker with a sysop: a fresh one per test (its own SQLite database), or,
    for a test marked `shared_realm`, the one its module's marked tests share."""
    if request.node.get_closest_marker("shared_realm") is not None:
        shared: Realm = request.getfixturevalue("_module_realm")
        return shared
    fresh: Realm = request.getfixturevalue("_fresh_realm")
    return fresh


async def _running_realm(data_dir: Path) -> AsyncIterator[Realm]:
    key = await create_sysop(data_dir)
    async with BrokerProcess(data_dir, env=FAST_ENV) as broker:
        yield Realm(broker, key)
    print(f"--- broker output ---\n{broker.output}")  # shown by pytest when a test fails


@pytest_asyncio.fixture(loop_scope="session")
async def _fresh_realm(tmp_path: Path) -> AsyncIterator[Realm]:
    async for running in _running_realm(tmp_path):
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def _module_realm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Realm]:
    async for running in _running_realm(tmp_path_factory.mktemp("shared-realm")):
        yield running


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The broker's environment (`FAST_ENV`) for each database: its SQLite default, or a fresh
    PostgreSQL database through `RENTAHAL_DATABASE_URL` (for crash-and-restart tests)."""
    if request.param == "sqlite":
        return dict(FAST_ENV)
    return FAST_ENV | {"RENTAHAL_DATABASE_URL": request.getfixturevalue("fresh_pg_url")}


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
