"""A PostgreSQL database of its own for a test: created on the server named by
`RENTAHAL_TEST_PG_DSN` (the test command sets it up) and dropped afterwards."""

from __future__ import annotations

import os
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_admin_url() -> URL:
    return make_url(os.environ.get("RENTAHAL_TEST_PG_DSN", DEFAULT_PG_DSN))


def _asyncpg_dsn(url: URL) -> str:
    """A DSN asyncpg accepts (plain `postgresql://` scheme, whatever driver the env named)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_admin(url: URL) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {url.render_as_string(hide_password=True)} "
            f"({type(exc).__name__}: {exc}). The store tests need it: start PostgreSQL or "
            "point RENTAHAL_TEST_PG_DSN at a server where this user may CREATE DATABASE.",
            pytrace=False,
        )


@dataclass
class PgDatabase:
    admin_url: URL
    name: str

    @property
    def store_url(self) -> str:
        return self.admin_url.set(
            drivername="postgresql+asyncpg", database=self.name
        ).render_as_string(hide_password=False)

    async def create(self) -> None:
        admin = await _pg_admin(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()

    async def drop(self) -> None:
        admin = await _pg_admin(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()
