"""What a finished query is charged, and what each step earns its worker's owner, as ledger
rows for the transaction that records the outcome (the prices are `accounting.cost`'s)."""

from __future__ import annotations

from dataclasses import dataclass

from rentahal.accounting import owner_earning, query_cost
from rentahal.config import Settings
from rentahal.core.stages import step_type
from rentahal.store import Query
from rentahal.store.ledger import entry_values, to_micros
from rentahal.store.models import LedgerKind

LedgerRow = dict[str, object]


@dataclass(frozen=True, slots=True)
class Charge:
    """The owner's bill for a whole query (every step's time together)."""

    cost: float
    energy_kwh: float
    row: LedgerRow


def charge(settings: Settings, query: Query, total_time: float, *, premium: bool) -> Charge:
    priced = query_cost(settings, total_time, premium=premium)
    row = entry_values(
        query.user_id,
        LedgerKind.QUERY,
        -to_micros(priced.cost),
        query_id=query.id,
        memo=query.query_type,
    )
    return Charge(priced.cost, priced.energy_kwh, row)


def earning(
    settings: Settings,
    query: Query,
    worker_name: str,
    owner_id: str | None,
    processing_time: float,
    step: str | None = None,
) -> list[LedgerRow]:
    """The row paying the worker's owner for the query's current step, or for `step` (none
    for a worker nobody owns, such as a cloud API the realm configured)."""
    amount = to_micros(owner_earning(settings, processing_time))
    if owner_id is None or amount == 0:
        return []
    row = entry_values(
        owner_id,
        LedgerKind.EARNING,
        amount,
        query_id=query.id,
        worker_name=worker_name,
        memo=step or step_type(query),
    )
    return [row]
