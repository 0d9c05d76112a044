"""REST for credit and accounting under `/api/v1`: balances and ledger rows, a sysop's grants
and budget switch, and the sysop's exports of the ledger and of every query's cost (CSV or
JSON, streamed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rentahal.api.deps import BrokerDep, PrincipalDep, SysopDep, TargetUserDep
from rentahal.api.errors import REFUSED
from rentahal.broker import Broker
from rentahal.store import User
from rentahal.store.ledger import MICROS, to_micros
from rentahal.store.models import LedgerEntry
from rentahal.store.models import Query as QueryRow

router = APIRouter(prefix="/api/v1", tags=["accounting"], responses=REFUSED)

MAX_GRANT = 1_000_000.0  # credits in one grant: a typo should not mint a fortune


class EntryView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    amount: float  # credits; negative for a charge
    query_id: str | None
    worker_name: str | None
    memo: str
    created_at: datetime

    @classmethod
    def of(cls, entry: LedgerEntry) -> EntryView:
        return cls.model_validate(entry).model_copy(update={"amount": entry.amount / MICROS})


class Credit(BaseModel):
    user_id: str
    balance: float  # credits: the sum of the user's ledger rows
    budget_enforced: bool
    entries: list[EntryView]  # newest first


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(ge=-MAX_GRANT, le=MAX_GRANT, description="credits; negative takes back")
    memo: Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)] = ""


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enforced: bool


async def credit_of(broker: Broker, user: User, limit: int) -> Credit:
    ledger = broker.store.ledger
    return Credit(
        user_id=user.id,
        balance=await ledger.balance(user.id) / MICROS,
        budget_enforced=user.budget_enforced,
        entries=[EntryView.of(e) for e in await ledger.entries(user.id, limit)],
    )


Limit = Annotated[int, Query(ge=0, le=1000, description="how many ledger rows, newest first")]


@router.get("/credits")
async def my_credit(principal: PrincipalDep, broker: BrokerDep, limit: Limit = 50) -> Credit:
    """Your balance and your newest ledger rows."""
    return await credit_of(broker, principal.user, limit)


@router.get("/users/{user_id}/credits")
async def user_credit(
    _: SysopDep, user: TargetUserDep, broker: BrokerDep, limit: Limit = 50
) -> Credit:
    return await credit_of(broker, user, limit)


@router.post("/users/{user_id}/credits", status_code=status.HTTP_201_CREATED)
async def grant_credit(
    principal: SysopDep, user: TargetUserDep, grant: Grant, broker: BrokerDep
) -> Credit:
    """Add credit to a user (or, negative, take it back): a ledger row, audited."""
    amount = to_micros(grant.amount)
    if amount == 0:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, {"code": "invalid", "message": "amount is 0"}
        )
    await broker.store.ledger.grant(user.id, amount, actor_id=principal.user.id, memo=grant.memo)
    await broker.store.audit.record(
        principal.user, "grant_credit", user.id, {"amount": grant.amount, "memo": grant.memo}
    )
    return await credit_of(broker, user, 10)


@router.put("/users/{user_id}/budget")
async def set_budget(
    principal: SysopDep, user: TargetUserDep, budget: Budget, broker: BrokerDep
) -> Credit:
    """Whether the user's queries need credit (`insufficient_credit` when it runs out)."""
    await broker.store.users.set_budget_enforced(user.id, budget.enforced)
    await broker.store.audit.record(
        principal.user, "set_budget", user.id, {"enforced": budget.enforced}
    )
    user.budget_enforced = budget.enforced  # as just stored
    return await credit_of(broker, user, 10)


# --- exports -------------------------------------------------------------------------------

Format = Annotated[Literal["csv", "json"], Query(alias="format")]
LEDGER_COLUMNS = (
    "id",
    "created_at",
    "user_id",
    "kind",
    "amount",
    "query_id",
    "worker_name",
    "actor_id",
    "memo",
)
QUERY_COLUMNS = (
    "id",
    "created_at",
    "finished_at",
    "user_id",
    "query_type",
    "model_name",
    "realm",
    "worker_name",
    "state",
    "error_code",
    "queue_wait",
    "processing_time",
    "cost",
    "energy_kwh",
    "energy_cost",
)


def ledger_record(entry: LedgerEntry) -> dict[str, Any]:
    record = {name: getattr(entry, name) for name in LEDGER_COLUMNS}
    return record | {"amount": entry.amount / MICROS}


def query_record(query: QueryRow, price_per_kwh: float) -> dict[str, Any]:
    """A query's accounting; `energy_cost` is its electricity at `electricity_cost_per_kwh`."""
    record = {name: getattr(query, name, None) for name in QUERY_COLUMNS}
    energy = query.energy_kwh
    return record | {"energy_cost": None if energy is None else energy * price_per_kwh}


def export(
    rows: AsyncIterator[Any],
    columns: Sequence[str],
    record: Callable[[Any], dict[str, Any]],
    fmt: str,
    name: str,
) -> StreamingResponse:
    """Rows as a CSV file or a JSON array, written as they are read."""

    def cell(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    async def as_csv() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        async for row in rows:
            writer.writerow([cell(v) for v in record(row).values()])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    async def as_json() -> AsyncIterator[str]:
        yield "["
        separator = ""
        async for row in rows:
            yield separator + json.dumps({k: cell(v) for k, v in record(row).items()})
            separator = ","
        yield "]"

    media = "text/csv" if fmt == "csv" else "application/json"
    return StreamingResponse(
        as_csv() if fmt == "csv" else as_json(),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{name}.{fmt}"'},
    )


EXPORTED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {}}}
}


@router.get("/export/ledger", response_class=StreamingResponse, responses=EXPORTED)
async def export_ledger(_: SysopDep, broker: BrokerDep, fmt: Format = "csv") -> StreamingResponse:
    """Every ledger row, oldest first (amounts in credits)."""
    return export(broker.store.ledger.every_entry(), LEDGER_COLUMNS, ledger_record, fmt, "ledger")


@router.get("/export/queries", response_class=StreamingResponse, responses=EXPORTED)
async def export_queries(_: SysopDep, broker: BrokerDep, fmt: Format = "csv") -> StreamingResponse:
    """Every query's accounting: who, what, which worker, how long, what it cost."""
    price = broker.settings.electricity_cost_per_kwh
    return export(
        broker.store.queries.every_query(),
        QUERY_COLUMNS,
        lambda query: query_record(query, price),
        fmt,
        "queries",
    )
