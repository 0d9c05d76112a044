"""The store layer, run identically against SQLite (a file) and PostgreSQL.

Every test that takes `store` runs twice: on a new `sqlite+aiosqlite:///<tmp_path>/store.db`
and on PostgreSQL (the server named by `RENTAHAL_TEST_PG_DSN`). PostgreSQL tests share one
database created and migrated for this module (and dropped after it), emptied before each
test; the migration tests that need a never-migrated database get one created for them alone.
PostgreSQL being unreachable is a failure, not a skip: the test command starts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, event, inspect, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

import rentahal.store.queries as queries_module
from rentahal.store import (
    AlreadyExists,
    NicknameTaken,
    Query,
    QueryState,
    Role,
    Store,
    Worker,
    utcnow,
)
from rentahal.store.migrations import alembic_config
from rentahal.store.models import ApiKey, Base, Session, TypeStats, User
from rentahal.store.workers import WorkerHealth
from tests.postgres import PgDatabase, pg_admin_url

EXPECTED_TABLES = {
    "users",
    "sessions",
    "api_keys",
    "queries",
    "workers",
    "models",
    "type_stats",
    "counters",
    "realms",
    "pools",
    "audit_log",
    "alembic_version",
}
HOUR = timedelta(hours=1)
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "postgresql"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty, never migrated database of each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("fresh_pg_url")


@pytest_asyncio.fixture(loop_scope="session")
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store on a new SQLite file."""
    opened = await Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}").open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pg_module_store() -> AsyncIterator[Store]:
    """A migrated store on a PostgreSQL database created for this module, dropped after it.

    Creating and migrating a database costs about 0.3 s, so the module shares one and each
    test starts from emptied tables (see `postgresql_store`).
    """
    database = PgDatabase(pg_admin_url(), f"rentahal_test_{secrets.token_hex(8)}")
    await database.create()
    try:
        opened = await Store(database.store_url).open()
        try:
            yield opened
        finally:
            await opened.close()
    finally:
        await database.drop()


@pytest_asyncio.fixture(loop_scope="session")
async def postgresql_store(pg_module_store: Store) -> Store:
    """The module's PostgreSQL store with every table emptied (the schema stays migrated)."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with pg_module_store.db.engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables}"))
    pg_module_store.forget_remembered()  # its cached keys and mark name rows that are gone
    return pg_module_store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Store:
    """An opened store with empty tables, on SQLite and on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_store")


# --------------------------------------------------------------------------- helpers


def is_utc_aware(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


async def rows(store: Store, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with store.db.engine.connect() as connection:
        result = await connection.execute(text(sql), params)
        return [dict(row) for row in result.mappings()]


async def new_query(
    store: Store,
    user_id: str,
    *,
    query_type: str = "chat",
    created_at: datetime | None = None,
    state: QueryState = QueryState.QUEUED,
    **fields: Any,
) -> Query:
    query = Query(
        user_id=user_id,
        query_type=query_type,
        prompt=fields.pop("prompt", "hello"),
        state=state.value,
        created_at=created_at or utcnow(),
        **fields,
    )
    return await store.queries.create(query)


async def finish(store: Store, query: Query, seconds: float = 2.0, cost: float = 0.5) -> None:
    await store.queries.finish_done(
        query,
        result="answer",
        result_type="text",
        processing_time=seconds,
        cost=cost,
        queue_wait=0.25,
    )


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# --------------------------------------------------------------------------- migrations


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_fresh_database_upgrades_to_head(fresh_url: str) -> None:
    store = Store(fresh_url)
    try:
        async with store.db.engine.connect() as connection:
            assert await connection.run_sync(table_names) == set()

        assert await store.open() is store
        async with store.db.engine.connect() as connection:
            tables = await connection.run_sync(table_names)
        assert tables >= EXPECTED_TABLES, EXPECTED_TABLES - tables
        assert await rows(store, "SELECT version_num FROM alembic_version") == [
            {"version_num": head_revision()}
        ]
    finally:
        await store.close()


async def test_opening_a_migrated_database_again_is_a_no_op(fresh_url: str) -> None:
    first = await Store(fresh_url).open()
    try:
        user = await first.users.create(nickname="survivor")
        await first.open()  # the same store, again
        again = await Store(fresh_url).open()  # and a second process's store
        try:
            assert await rows(again, "SELECT version_num FROM alembic_version") == [
                {"version_num": head_revision()}
            ]
            async with again.db.engine.connect() as connection:
                assert await connection.run_sync(table_names) >= EXPECTED_TABLES
            kept = await again.users.get(user.id)
            assert kept is not None and kept.nickname == "survivor"
            assert len(await again.users.list()) == 1
        finally:
            await again.close()
    finally:
        await first.close()


async def test_balances_kept_from_a_history_written_before_they_were(fresh_url: str) -> None:
    """A database with ledger rows from before balances were kept (revision 0012) comes up
    with each user's balance the sum of their rows; rows added since add to it."""
    store = Store(fresh_url)
    try:

        def to_0012(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0012")

        async with store.db.engine.begin() as connection:
            await connection.run_sync(to_0012)
            for user_id in ("a" * 32, "b" * 32, "c" * 32):
                await connection.execute(
                    text(
                        "INSERT INTO users (id, nickname, role, is_banned, created_at, "
                        "last_seen_at, query_count, total_query_time, total_cost, "
                        "budget_enforced) VALUES (:id, :id, 'user', false, :t, :t, 0, 0, 0, "
                        "false)"
                    ),
                    {"id": user_id, "t": T0},
                )
            for user_id, amount in [("a" * 32, 500), ("a" * 32, -120), ("b" * 32, -7)]:
                await connection.execute(
                    text(
                        "INSERT INTO ledger (user_id, kind, amount, memo, created_at) "
                        "VALUES (:user_id, 'grant', :amount, '', :t)"
                    ),
                    {"user_id": user_id, "amount": amount, "t": T0},
                )
        await store.open()
        assert [await store.ledger.balance(u * 32) for u in "abc"] == [380, -7, 0]
        await store.ledger.grant("c" * 32, 1000, actor_id="a" * 32, memo="welcome")
        await store.ledger.grant("a" * 32, -80, actor_id="a" * 32, memo="refund")
        assert [await store.ledger.balance(u * 32) for u in "abc"] == [300, -7, 1000]
    finally:
        await store.close()


async def test_migrated_schema_matches_the_models(store: Store) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with store.db.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_sqlite_is_in_wal_mode_with_foreign_keys_on(sqlite_store: Store) -> None:
    store = sqlite_store
    assert store.db.is_sqlite
    async with store.db.engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    # WAL leaves its side file next to the database.
    database = Path(make_url(store.db.url).database or "")
    assert database.with_name(database.name + "-wal").exists()


async def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError):
        await store.credentials.create_session("0" * 32, HOUR)
    with pytest.raises(IntegrityError):
        await new_query(store, "0" * 32)


async def test_deleting_a_user_cascades_and_unowns_workers(store: Store) -> None:
    user = await store.users.create()
    token = await store.credentials.create_session(user.id, HOUR)
    key = await store.credentials.create_api_key(user.id)
    await new_query(store, user.id)
    await store.workers.add(Worker(name="w1", address="http://w1", kind="ollama", owner_id=user.id))

    async with store.db.session() as session:
        await session.execute(delete(User).where(User.id == user.id))
        await session.commit()

    for table in ("sessions", "api_keys", "queries"):
        assert await rows(store, f"SELECT * FROM {table}") == [], table
    assert await store.credentials.resolve_session(token, HOUR) is None
    assert await store.credentials.resolve_api_key(key) is None
    worker = await store.workers.get("w1")
    assert worker is not None and worker.owner_id is None


# --------------------------------------------------------------------------- users


async def test_create_guest_gets_a_generated_nickname(store: Store) -> None:
    user = await store.users.create()
    assert user.nickname == f"user_{user.id[:8]}"
    assert user.role == Role.GUEST.value and not user.is_sysop

    stored = await store.users.get(user.id)
    assert stored is not None
    assert (stored.nickname, stored.role, stored.is_banned) == (user.nickname, "guest", False)
    assert (stored.query_count, stored.total_query_time, stored.total_cost) == (0, 0.0, 0.0)
    assert is_utc_aware(stored.created_at) and is_utc_aware(stored.last_seen_at)
    assert await store.users.get("f" * 32) is None


async def test_create_with_nickname_and_role(store: Store) -> None:
    user = await store.users.create(role=Role.SYSOP, nickname="hal")
    stored = await store.users.get(user.id)
    assert stored is not None and stored.nickname == "hal" and stored.is_sysop


async def test_nicknames_are_unique(store: Store) -> None:
    await store.users.create(nickname="dave")
    other = await store.users.create(nickname="frank")

    with pytest.raises(NicknameTaken):
        await store.users.create(nickname="dave")
    with pytest.raises(NicknameTaken):
        await store.users.set_nickname(other.id, "dave")

    stored = await store.users.get(other.id)
    assert stored is not None and stored.nickname == "frank"
    await store.users.set_nickname(other.id, "poole")
    stored = await store.users.get(other.id)
    assert stored is not None and stored.nickname == "poole"
    assert [u.nickname for u in await store.users.list()] == ["dave", "poole"]


async def test_get_by_nickname(store: Store) -> None:
    user = await store.users.create(nickname="heywood")
    found = await store.users.get_by_nickname("heywood")
    assert found is not None and found.id == user.id
    assert await store.users.get_by_nickname("nobody") is None


async def test_set_banned_and_set_role_report_whether_the_user_exists(store: Store) -> None:
    user = await store.users.create()

    assert await store.users.set_banned(user.id, True) is True
    assert await store.users.set_role(user.id, Role.PREMIUM) is True
    stored = await store.users.get(user.id)
    assert stored is not None and stored.is_banned and stored.role == "premium"

    assert await store.users.set_banned(user.id, False) is True
    stored = await store.users.get(user.id)
    assert stored is not None and not stored.is_banned

    assert await store.users.set_banned("f" * 32, True) is False
    assert await store.users.set_role("f" * 32, Role.SYSOP) is False


async def test_touch_updates_last_seen_and_reports_whether_the_user_exists(store: Store) -> None:
    user = await store.users.create()
    async with store.db.session() as session:
        await session.execute(update(User).where(User.id == user.id).values(last_seen_at=T0))
        await session.commit()

    assert await store.users.touch(user.id) is True
    stored = await store.users.get(user.id)
    assert stored is not None and stored.last_seen_at > T0 and is_utc_aware(stored.last_seen_at)

    assert await store.users.touch("f" * 32) is False


# --------------------------------------------------------------------------- credentials


async def test_session_token_resolves_to_its_user(store: Store) -> None:
    user = await store.users.create()
    token = await store.credentials.create_session(user.id, HOUR)

    resolved = await store.credentials.resolve_session(token, HOUR)
    assert resolved is not None and resolved.id == user.id
    assert await store.credentials.resolve_session(token + "x", HOUR) is None
    assert await store.credentials.resolve_session("unknown-token", HOUR) is None

    # Only the hash of the token is stored.
    [row] = await rows(store, "SELECT * FROM sessions")
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in row.values())


async def test_expired_session_does_not_resolve(store: Store) -> None:
    user = await store.users.create()
    expired = await store.credentials.create_session(user.id, timedelta(seconds=-1))
    just_now = await store.credentials.create_session(user.id, timedelta(0))
    assert await store.credentials.resolve_session(expired, HOUR) is None
    assert await store.credentials.resolve_session(just_now, HOUR) is None


async def test_deleted_session_does_not_resolve(store: Store) -> None:
    user = await store.users.create()
    token = await store.credentials.create_session(user.id, HOUR)
    other = await store.credentials.create_session(user.id, HOUR)

    await store.credentials.delete_session(token)
    assert await store.credentials.resolve_session(token, HOUR) is None
    assert await store.credentials.resolve_session(other, HOUR) is not None
    await store.credentials.delete_session("never-existed")  # harmless


async def session_expiry(store: Store, token: str) -> datetime:
    async with store.db.session() as session:
        row = await session.get(Session, hashlib.sha256(token.encode()).hexdigest())
    assert row is not None and is_utc_aware(row.expires_at)
    return row.expires_at


async def test_session_slides_when_used(store: Store) -> None:
    user = await store.users.create()

    # A one-hour session resolved under a one-day lifetime is renewed to a day.
    token = await store.credentials.create_session(user.id, HOUR)
    assert await store.credentials.resolve_session(token, timedelta(days=1)) is not None
    assert await session_expiry(store, token) - utcnow() > timedelta(hours=23)

    # A session with most of its lifetime left is not rewritten on every request.
    fresh = await store.credentials.create_session(user.id, HOUR)
    created = await session_expiry(store, fresh)
    assert await store.credentials.resolve_session(fresh, HOUR) is not None
    assert await session_expiry(store, fresh) == created


async def test_api_key_resolves_and_only_its_hash_is_stored(store: Store) -> None:
    user = await store.users.create(role=Role.USER)
    key = await store.credentials.create_api_key(user.id, name="laptop")
    assert key.startswith("rah_") and len(key) > 40

    resolved = await store.credentials.resolve_api_key(key)
    assert resolved is not None and resolved.id == user.id

    [row] = await rows(store, "SELECT * FROM api_keys")
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["name"] == "laptop" and row["user_id"] == user.id
    assert all(key not in str(value) for value in row.values()), row
    async with store.db.session() as session:
        api_key = await session.scalar(select(ApiKey))
    assert api_key is not None
    assert api_key.scopes == ["*"]
    assert api_key.last_used_at is None  # gathered in memory, written together
    await store.credentials.flush_usage()
    async with store.db.session() as session:
        api_key = await session.scalar(select(ApiKey))
    assert api_key is not None
    assert is_utc_aware(api_key.last_used_at)  # resolving records the use
    assert api_key.revoked_at is None


async def test_api_key_scopes_round_trip(store: Store) -> None:
    user = await store.users.create()
    await store.credentials.create_api_key(user.id, scopes=["chat", "vision", "sysop:read"])
    async with store.db.session() as session:
        api_key = await session.scalar(select(ApiKey))
    assert api_key is not None and api_key.scopes == ["chat", "vision", "sysop:read"]


async def test_revoked_api_key_does_not_resolve(store: Store) -> None:
    user = await store.users.create()
    revoked = await store.credentials.create_api_key(user.id, name="old")
    kept = await store.credentials.create_api_key(user.id, name="new")

    async with store.db.session() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.name == "old").values(revoked_at=utcnow())
        )
        await session.commit()

    assert await store.credentials.resolve_api_key(revoked) is None
    assert await store.credentials.resolve_api_key(kept) is not None


class StatementCounter:
    """Counts the statements the store's engine sends (a read or a write each)."""

    def __init__(self, store: Store) -> None:
        self.engine = store.db.engine.sync_engine
        self.statements: list[str] = []

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self.statements

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


async def test_a_resolved_credential_is_answered_without_the_store(store: Store) -> None:
    user = await store.users.create(role=Role.USER)
    key = await store.credentials.create_api_key(user.id, scopes=["chat"])
    assert await store.credentials.resolve_api_key_scoped(key) is not None

    with StatementCounter(store) as statements:
        for _ in range(20):
            resolved = await store.credentials.resolve_api_key_scoped(key)
            assert resolved is not None and resolved[0].id == user.id
            assert resolved[1] == ["chat"]
    assert statements == []

    # The keys' usage stamps, written together: one statement for any number of keys.
    other = await store.credentials.create_api_key(user.id)
    assert await store.credentials.resolve_api_key(other) is not None
    with StatementCounter(store) as statements:
        await store.credentials.flush_usage()
    assert [s.split()[0].upper() for s in statements] == ["UPDATE"]
    stamps = await rows(store, "SELECT last_used_at FROM api_keys")
    assert len(stamps) == 2 and all(row["last_used_at"] is not None for row in stamps)


async def test_a_change_to_a_credential_or_its_user_holds_on_the_next_resolve(
    store: Store,
) -> None:
    user = await store.users.create(role=Role.USER, nickname="dave")
    laptop, key = await store.credentials.issue_api_key(user.id, name="laptop")
    phone = await store.credentials.create_api_key(user.id, name="phone")

    async def by_key() -> User:
        resolved = await store.credentials.resolve_api_key(phone)
        assert resolved is not None
        return resolved

    assert (await by_key()).nickname == "dave"
    await store.users.set_banned(user.id, True)
    assert (await by_key()).is_banned
    await store.users.set_banned(user.id, False)
    assert not (await by_key()).is_banned
    await store.users.set_role(user.id, Role.GUEST)
    assert (await by_key()).role == Role.GUEST.value
    await store.users.set_nickname(user.id, "hal")
    assert (await by_key()).nickname == "hal"
    await store.users.set_budget_enforced(user.id, True)
    assert (await by_key()).budget_enforced

    assert await store.credentials.resolve_api_key(key) is not None
    assert await store.credentials.revoke_api_key(laptop.id, owner_id=user.id)
    assert await store.credentials.resolve_api_key(key) is None
    assert await store.credentials.resolve_api_key(phone) is not None


async def test_a_users_standing_is_read_once_and_a_ban_or_budget_holds_at_once(
    store: Store,
) -> None:
    user = await store.users.create(role=Role.USER)
    first = await store.ledger.standing(user.id)
    assert (first.banned, first.balance) == (False, None)
    with StatementCounter(store) as statements:
        for _ in range(20):
            assert not (await store.ledger.standing(user.id)).banned
    assert statements == []

    await store.users.set_banned(user.id, True)
    assert (await store.ledger.standing(user.id)).banned
    await store.users.set_banned(user.id, False)
    await store.users.set_budget_enforced(user.id, True)
    await store.ledger.grant(user.id, 5000, actor_id=user.id, memo="test")
    with StatementCounter(store) as statements:
        standing = await store.ledger.standing(user.id)
    assert (standing.banned, standing.balance) == (False, 5000)
    assert statements  # an enforced budget's balance is read from the store each time


async def test_malformed_api_keys_are_refused_before_lookup(store: Store) -> None:
    user = await store.users.create()
    key = await store.credentials.create_api_key(user.id)
    unprefixed = "xyz_" + key[4:]
    too_long = "rah_" + "a" * 200
    # Rows whose hashes would match, so only the shape check can refuse these keys.
    async with store.db.session() as session:
        for name, plain in (("unprefixed", unprefixed), ("long", too_long)):
            session.add(
                ApiKey(
                    user_id=user.id,
                    name=name,
                    prefix=plain[:12],
                    key_hash=hashlib.sha256(plain.encode()).hexdigest(),
                    scopes=["*"],
                )
            )
        await session.commit()

    assert await store.credentials.resolve_api_key(unprefixed) is None
    assert await store.credentials.resolve_api_key(key[4:]) is None
    assert await store.credentials.resolve_api_key(too_long) is None
    assert await store.credentials.resolve_api_key("") is None
    assert await store.credentials.resolve_api_key(key) is not None


# --------------------------------------------------------------------------- queries


async def test_create_query_with_defaults_and_options(store: Store) -> None:
    user = await store.users.create()
    options = {"temperature": 0.2, "stop": ["\n"], "nested": {"a": [1, 2, None], "b": True}}
    query = await new_query(store, user.id, prompt="open the pod bay doors", options=options)

    stored = await store.queries.get(query.id)
    assert stored is not None
    assert stored.prompt == "open the pod bay doors" and stored.options == options
    assert stored.state == QueryState.QUEUED.value
    assert (stored.model_type, stored.model_name, stored.attempts) == ("worker_node", "", 0)
    assert stored.worker_name is None and stored.delivered is False
    assert is_utc_aware(stored.created_at)
    assert await store.queries.get("f" * 32) is None


async def test_history_is_newest_first_with_limit(store: Store) -> None:
    user = await store.users.create()
    other = await store.users.create()
    made = [
        await new_query(store, user.id, prompt=f"q{i}", created_at=T0 + timedelta(minutes=i))
        for i in range(5)
    ]
    await new_query(store, other.id, prompt="not mine", created_at=T0 + HOUR)

    history = await store.queries.history(user.id, limit=3)
    assert [q.id for q in history] == [made[4].id, made[3].id, made[2].id]
    assert [q.prompt for q in await store.queries.history(user.id)] == [
        "q4",
        "q3",
        "q2",
        "q1",
        "q0",
    ]
    assert await store.queries.history("f" * 32) == []


async def test_unfinished_returns_live_states_oldest_first(store: Store) -> None:
    user = await store.users.create()
    states = [
        QueryState.RUNNING,
        QueryState.DONE,
        QueryState.QUEUED,
        QueryState.FAILED,
        QueryState.DISPATCHED,
        QueryState.CANCELLED,
        QueryState.EXPIRED,
    ]
    made = {
        state: await new_query(store, user.id, state=state, created_at=T0 + timedelta(seconds=i))
        for i, state in enumerate(states)
    }
    unfinished = await store.queries.unfinished()
    assert [q.id for q in unfinished] == [
        made[QueryState.RUNNING].id,
        made[QueryState.QUEUED].id,
        made[QueryState.DISPATCHED].id,
    ]


async def test_dispatch_and_run_set_state_worker_attempts_and_times(store: Store) -> None:
    user = await store.users.create()
    query = await new_query(store, user.id)

    dispatched_at = utcnow()
    await store.queries.mark_dispatched(query, "w1", attempts=2, at=dispatched_at)
    stored = await store.queries.get(query.id)
    assert stored is not None
    assert (stored.state, stored.worker_name, stored.attempts) == ("dispatched", "w1", 2)
    assert stored.dispatched_at == dispatched_at and is_utc_aware(stored.dispatched_at)
    assert stored.started_at is None

    await store.queries.mark_running(query)
    stored = await store.queries.get(query.id)
    assert stored is not None and stored.state == "running"
    assert is_utc_aware(stored.started_at) and stored.started_at >= dispatched_at
    assert stored.finished_at is None


async def test_finish_done_stores_result_and_adds_statistics(store: Store) -> None:
    user = await store.users.create()
    first = await new_query(store, user.id, query_type="chat")
    second = await new_query(store, user.id, query_type="chat")
    vision = await new_query(store, user.id, query_type="vision")

    await finish(store, first, seconds=2.0, cost=0.5)
    assert first.state == "done" and first.result == "answer"  # updated in place
    assert is_utc_aware(first.finished_at)

    stored = await store.queries.get(first.id)
    assert stored is not None
    assert (stored.state, stored.result, stored.result_type) == ("done", "answer", "text")
    assert (stored.processing_time, stored.cost, stored.queue_wait) == (2.0, 0.5, 0.25)
    assert stored.finished_at == first.finished_at and is_utc_aware(stored.finished_at)
    assert stored.delivered is False

    # A second finish of the same type goes through the upsert's UPDATE branch.
    await finish(store, second, seconds=4.0, cost=1.0)
    await finish(store, vision, seconds=10.0, cost=0.0)

    owner = await store.users.get(user.id)
    assert owner is not None
    assert (owner.query_count, owner.total_query_time, owner.total_cost) == (3, 16.0, 1.5)

    async with store.db.session() as session:
        type_stats = {row.query_type: row for row in await session.scalars(select(TypeStats))}
    assert set(type_stats) == {"chat", "vision"}
    chat = type_stats["chat"]
    assert (chat.query_count, chat.total_processing_time, chat.total_cost) == (2, 6.0, 1.5)
    assert is_utc_aware(chat.last_updated)
    vision_stats = type_stats["vision"]
    assert (vision_stats.query_count, vision_stats.total_processing_time) == (1, 10.0)


async def test_finish_done_is_atomic(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    user = await store.users.create()
    query = await new_query(store, user.id)

    # The last statement of the transaction fails: the earlier two must roll back with it.
    for dialect in ("sqlite", "postgresql"):
        monkeypatch.setitem(
            queries_module._UPSERT_TYPE_STATS, dialect, text("INSERT INTO no_such_table VALUES (1)")
        )
    with pytest.raises(DBAPIError):
        await finish(store, query)

    # Neither the query nor the user's counters changed: it all rolled back together.
    stored = await store.queries.get(query.id)
    assert stored is not None and stored.state == "queued" and stored.result is None
    owner = await store.users.get(user.id)
    assert owner is not None and (owner.query_count, owner.total_query_time) == (0, 0.0)
    assert await rows(store, "SELECT * FROM type_stats") == []


async def test_finish_unsuccessful_records_the_error(store: Store) -> None:
    user = await store.users.create()
    query = await new_query(store, user.id)
    await store.queries.mark_dispatched(query, "w1", attempts=1, at=utcnow())

    await store.queries.finish_unsuccessful(
        query, QueryState.FAILED, code="worker_error", message="worker exploded"
    )
    assert query.state == "failed" and query.error_code == "worker_error"  # in place

    stored = await store.queries.get(query.id)
    assert stored is not None
    assert (stored.state, stored.error_code, stored.error) == (
        "failed",
        "worker_error",
        "worker exploded",
    )
    assert is_utc_aware(stored.finished_at) and stored.result is None
    # Failures are not billed or counted.
    owner = await store.users.get(user.id)
    assert owner is not None and owner.query_count == 0
    assert await rows(store, "SELECT * FROM type_stats") == []

    expired = await new_query(store, user.id)
    await store.queries.finish_unsuccessful(
        expired, QueryState.EXPIRED, code="timeout", message="too slow"
    )
    stored = await store.queries.get(expired.id)
    assert stored is not None and (stored.state, stored.error_code) == ("expired", "timeout")


async def test_undelivered_and_mark_delivered(store: Store) -> None:
    user = await store.users.create()
    other = await store.users.create()
    done = await new_query(store, user.id)
    failed = await new_query(store, user.id)
    running = await new_query(store, user.id, state=QueryState.RUNNING)
    not_mine = await new_query(store, other.id)

    await finish(store, done)
    await store.queries.finish_unsuccessful(failed, QueryState.FAILED, code="x", message="y")
    await finish(store, not_mine)
    async with store.db.session() as session:  # make the finish order unambiguous
        await session.execute(update(Query).where(Query.id == done.id).values(finished_at=T0))
        await session.commit()

    undelivered = await store.queries.undelivered(user.id)
    assert [q.id for q in undelivered] == [done.id, failed.id]
    assert running.id not in {q.id for q in undelivered}

    await store.queries.mark_delivered([done.id])
    assert [q.id for q in await store.queries.undelivered(user.id)] == [failed.id]
    await store.queries.mark_delivered([])  # nothing to do
    await store.queries.mark_delivered([failed.id])
    assert await store.queries.undelivered(user.id) == []
    assert [q.id for q in await store.queries.undelivered(other.id)] == [not_mine.id]
    stored = await store.queries.get(done.id)
    assert stored is not None and stored.delivered is True


async def test_requeue_returns_a_job_to_the_queue(store: Store) -> None:
    user = await store.users.create()
    query = await new_query(store, user.id)
    await store.queries.mark_dispatched(query, "w1", attempts=1, at=utcnow())
    await store.queries.mark_running(query)

    await store.queries.requeue(query)
    stored = await store.queries.get(query.id)
    assert stored is not None
    assert (stored.state, stored.worker_name, stored.attempts) == ("queued", None, 1)
    assert [q.id for q in await store.queries.unfinished()] == [query.id]


async def test_timestamps_are_utc_aware_after_a_round_trip(store: Store) -> None:
    user = await store.users.create()
    query = await new_query(store, user.id)
    await store.queries.mark_dispatched(query, "w1", attempts=1, at=utcnow())
    await store.queries.mark_running(query)
    await finish(store, query)

    stored = await store.queries.get(query.id)
    assert stored is not None
    for name in ("created_at", "dispatched_at", "started_at", "finished_at"):
        assert is_utc_aware(getattr(stored, name)), name
    [history] = await store.queries.history(user.id)
    assert is_utc_aware(history.created_at)
    assert history.created_at == query.created_at  # microseconds survive


async def test_datetimes_in_another_zone_keep_their_instant(store: Store) -> None:
    """An aware datetime in any zone is the same instant when read back."""
    await store.workers.add(Worker(name="w1", address="http://w1", kind="ollama"))
    paris = datetime(2025, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))

    await store.workers.save_health([WorkerHealth("w1", 50.0, False, paris, ())])
    worker = await store.workers.get("w1")
    assert worker is not None and is_utc_aware(worker.last_active)
    assert worker.last_active == paris, f"stored {worker.last_active}, expected {paris}"


async def test_naive_datetimes_are_refused(store: Store) -> None:
    await store.workers.add(Worker(name="w1", address="http://w1", kind="ollama"))
    with pytest.raises(StatementError, match="naive datetime"):
        await store.workers.save_health([WorkerHealth("w1", 50.0, False, datetime(2025, 1, 1), ())])


# --------------------------------------------------------------------------- stats


async def test_system_stats_are_empty_on_a_fresh_database(store: Store) -> None:
    stats = await store.stats.system()
    assert (stats.total_queries, stats.total_processing_time, stats.total_cost) == (0, 0.0, 0.0)
    assert stats.last_updated is None and stats.max_connected_users == 0
    assert stats.average_times == {}


async def test_system_stats_sum_types_and_average_per_type(store: Store) -> None:
    user = await store.users.create()
    for query_type, seconds, cost in (
        ("chat", 1.0, 0.25),
        ("chat", 3.0, 0.25),
        ("vision", 6.0, 1.0),
        ("imagine", 30.0, 2.0),
        ("imagine", 10.0, 0.0),
        ("imagine", 20.0, 0.0),
    ):
        await finish(store, await new_query(store, user.id, query_type=query_type), seconds, cost)

    stats = await store.stats.system()
    assert stats.total_queries == 6
    assert stats.total_processing_time == pytest.approx(70.0)
    assert stats.total_cost == pytest.approx(3.5)
    assert stats.average_times == pytest.approx({"chat": 2.0, "vision": 6.0, "imagine": 20.0})
    totals = {t: (x.queries, x.processing_time, x.cost) for t, x in stats.by_type.items()}
    assert totals == {
        "chat": (2, pytest.approx(4.0), pytest.approx(0.5)),
        "vision": (1, pytest.approx(6.0), pytest.approx(1.0)),
        "imagine": (3, pytest.approx(60.0), pytest.approx(2.0)),
    }
    assert is_utc_aware(stats.last_updated)
    async with store.db.session() as session:
        newest = max(row.last_updated for row in await session.scalars(select(TypeStats)))
    assert stats.last_updated == newest


async def test_record_connected_users_keeps_the_high_water_mark(store: Store) -> None:
    assert await store.stats.record_connected_users(5) == 5
    assert await store.stats.record_connected_users(3) == 5
    assert await store.stats.record_connected_users(8) == 8
    assert await store.stats.record_connected_users(0) == 8
    assert (await store.stats.system()).max_connected_users == 8
    assert await rows(store, "SELECT name, value FROM counters") == [
        {"name": "max_connected_users", "value": 8}
    ]


async def test_connections_opening_at_once_record_one_high_water_mark(store: Store) -> None:
    # The first connections to a new database all find no mark: one must not fail the rest.
    marks = await asyncio.gather(*(store.stats.record_connected_users(n) for n in range(1, 9)))
    assert max(marks) == 8
    assert (await store.stats.system()).max_connected_users == 8


# --------------------------------------------------------------------------- workers & models


async def test_add_get_and_list_workers(store: Store) -> None:
    owner = await store.users.create(role=Role.SYSOP)
    first = await store.workers.add(
        Worker(
            name="gpu-1",
            address="http://10.0.0.5:8000",
            kind="rentahal",
            capabilities=["chat", "vision"],
            models=["llama3", "llava:7b"],
            tags={"region": "eu", "gpus": 2, "spot": False},
            api_key_env="GPU1_KEY",
            owner_id=owner.id,
            created_at=T0,
        )
    )
    await store.workers.add(
        Worker(name="cloud", address="https://api", kind="openai", created_at=T0 + HOUR)
    )

    worker = await store.workers.get("gpu-1")
    assert worker is not None and worker.id == first.id
    assert worker.capabilities == ["chat", "vision"]
    assert worker.models == ["llama3", "llava:7b"]
    assert worker.tags == {"region": "eu", "gpus": 2, "spot": False}
    assert (worker.address, worker.kind, worker.api_key_env) == (
        "http://10.0.0.5:8000",
        "rentahal",
        "GPU1_KEY",
    )
    assert worker.owner_id == owner.id

    cloud = await store.workers.get("cloud")
    assert cloud is not None
    assert (cloud.capabilities, cloud.models, cloud.tags) == ([], [], {})
    assert (cloud.max_concurrency, cloud.health_score, cloud.blacklisted) == (4, 100.0, False)
    assert cloud.last_active is None and is_utc_aware(cloud.created_at)

    assert [w.name for w in await store.workers.list()] == ["gpu-1", "cloud"]
    assert await store.workers.get("nope") is None


async def test_duplicate_worker_name_raises_already_exists(store: Store) -> None:
    await store.workers.add(Worker(name="gpu-1", address="http://a", kind="ollama"))
    with pytest.raises(AlreadyExists, match="gpu-1"):
        await store.workers.add(Worker(name="gpu-1", address="http://b", kind="openai"))

    [worker] = await store.workers.list()
    assert worker.address == "http://a"
    await store.workers.add(Worker(name="gpu-2", address="http://b", kind="openai"))
    assert len(await store.workers.list()) == 2


async def test_remove_worker_reports_whether_it_existed(store: Store) -> None:
    await store.workers.add(Worker(name="gpu-1", address="http://a", kind="ollama"))
    assert await store.workers.remove("gpu-1") is True
    assert await store.workers.get("gpu-1") is None
    assert await store.workers.remove("gpu-1") is False
    assert await store.workers.list() == []


async def test_save_health_persists_score_blacklist_last_active_and_models(
    store: Store,
) -> None:
    for name in ("a", "b", "c"):
        await store.workers.add(Worker(name=name, address=f"http://{name}", kind="ollama"))
    seen = utcnow()

    await store.workers.save_health(
        [
            WorkerHealth("a", 42.5, False, seen, ("llama3", "phi3")),
            WorkerHealth("b", 0.0, True, None, ()),
            WorkerHealth("ghost", 1.0, True, seen, ()),
        ]
    )
    workers = {w.name: w for w in await store.workers.list()}
    assert set(workers) == {"a", "b", "c"}  # an unknown name is ignored, not created
    assert (workers["a"].health_score, workers["a"].blacklisted) == (42.5, False)
    assert workers["a"].last_active == seen and is_utc_aware(workers["a"].last_active)
    assert (workers["b"].health_score, workers["b"].blacklisted) == (0.0, True)
    assert workers["b"].last_active is None
    assert (workers["c"].health_score, workers["c"].blacklisted) == (100.0, False)
    # What the probe listed is kept apart from what the sysop configured.
    assert (workers["a"].reported_models, workers["a"].models) == (["llama3", "phi3"], [])


async def test_models_per_provider(store: Store) -> None:
    made = await store.models.add("huggingface", "mistral-7b", "chat")
    await store.models.add("huggingface", "blip", "vision")
    await store.models.add("openai", "mistral-7b", "chat")  # same name, other provider

    with pytest.raises(AlreadyExists, match="blip"):
        await store.models.add("huggingface", "blip", "chat")

    listed = await store.models.list("huggingface")
    assert [(m.name, m.query_type) for m in listed] == [("blip", "vision"), ("mistral-7b", "chat")]
    assert listed[1].id == made.id and is_utc_aware(listed[1].created_at)
    assert [m.name for m in await store.models.list("openai")] == ["mistral-7b"]
    assert await store.models.list("anthropic") == []

    assert await store.models.remove("huggingface", "mistral-7b") is True
    assert await store.models.remove("huggingface", "mistral-7b") is False
    assert [m.name for m in await store.models.list("huggingface")] == ["blip"]
    assert [m.name for m in await store.models.list("openai")] == ["mistral-7b"]
