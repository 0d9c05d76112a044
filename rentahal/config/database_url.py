"""Database URLs as people copy them from their provider, made the ones the broker opens.

Providers and `psql` print `postgresql://user:password@host:5432/db` (or `postgres://…`, or
with a sync driver named, `postgresql+psycopg2://…`); the broker opens PostgreSQL through
asyncpg and SQLite through aiosqlite, so the scheme gets the async driver, and libpq's
`sslmode` becomes asyncpg's `ssl` (which takes the same values). A URL that already names the
async driver is kept as it is; any other database is refused by name.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

POSTGRESQL = "postgresql+asyncpg"
SQLITE = "sqlite+aiosqlite"
# Schemes and drivers taken for each engine; the async one is what the broker opens.
POSTGRESQL_NAMES = frozenset(
    {"postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", POSTGRESQL}
)
SQLITE_NAMES = frozenset({"sqlite", "sqlite+pysqlite", SQLITE})


class UnsupportedDatabase(ValueError):
    pass


def async_database_url(url: str) -> str:
    """`url` with the async driver the broker opens (see the module's docstring)."""
    parsed = _parse(url)
    if parsed.drivername in SQLITE_NAMES:
        return parsed.set(drivername=SQLITE).render_as_string(hide_password=False)
    if parsed.drivername not in POSTGRESQL_NAMES:
        raise UnsupportedDatabase(
            f"database_url names {parsed.drivername!r}: RENT A HAL runs on PostgreSQL "
            "(postgresql://user:password@host:5432/db) or SQLite (sqlite:///path/to/file.db)"
        )
    query = dict(parsed.query)
    if "sslmode" in query:
        query.setdefault("ssl", query["sslmode"])
        del query["sslmode"]
    return parsed.set(drivername=POSTGRESQL, query=query).render_as_string(hide_password=False)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise UnsupportedDatabase(
            "database_url is not a database URL: expected postgresql://user:password@host:5432/db "
            "or sqlite:///path/to/file.db"
        ) from None
