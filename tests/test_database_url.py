"""`database_url` as providers print it (`postgresql://…`, `postgres://…`, a sync driver
named, libpq's `sslmode`): the broker opens it with its async driver, and refuses any other
database by name when the settings load."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from rentahal.config import load_settings
from rentahal.config.database_url import UnsupportedDatabase, async_database_url
from rentahal.testing.broker import BrokerProcess
from tests.conftest import FAST_ENV


@pytest.mark.parametrize(
    ("given", "opened"),
    [
        ("postgresql://ann@db:5432/hal", "postgresql+asyncpg://ann@db:5432/hal"),
        ("postgres://ann:s%40cret@db/hal", "postgresql+asyncpg://ann:s%40cret@db/hal"),
        ("postgresql+psycopg2://ann@db/hal", "postgresql+asyncpg://ann@db/hal"),
        ("postgresql+asyncpg://ann@db/hal", "postgresql+asyncpg://ann@db/hal"),
        ("postgresql://ann@db/hal?sslmode=require", "postgresql+asyncpg://ann@db/hal?ssl=require"),
        ("sqlite:///var/lib/hal.db", "sqlite+aiosqlite:///var/lib/hal.db"),
        ("sqlite+aiosqlite:///hal.db", "sqlite+aiosqlite:///hal.db"),
    ],
)
def test_a_providers_url_is_opened_with_the_async_driver(given: str, opened: str) -> None:
    assert async_database_url(given) == opened


@pytest.mark.parametrize("url", ["mysql://ann@db/hal", "not a url", "mongodb://db/hal"])
def test_another_database_is_refused_by_name(url: str) -> None:
    with pytest.raises(UnsupportedDatabase, match="postgresql://"):
        async_database_url(url)


def test_the_settings_refuse_it_when_they_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RENTAHAL_DATABASE_URL", "mysql://ann@db/hal")
    with pytest.raises(ValidationError, match="RENT A HAL runs on PostgreSQL"):
        load_settings(data_dir=tmp_path)


async def test_a_broker_runs_on_a_plain_postgresql_url(tmp_path: Path, fresh_pg_url: str) -> None:
    plain = make_url(fresh_pg_url).set(drivername="postgresql", query={"sslmode": "disable"})
    env = FAST_ENV | {"RENTAHAL_DATABASE_URL": plain.render_as_string(hide_password=False)}
    async with (
        BrokerProcess(tmp_path, env=env) as broker,
        httpx.AsyncClient(base_url=broker.url) as http,
    ):
        ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "store": "ok"}
