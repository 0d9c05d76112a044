"""What a finished query is charged and what a step earns its worker's owner, as the ledger
rows the outcome's transaction writes (`scheduler/billing.py`)."""

from __future__ import annotations

import pytest

from rentahal.config import Settings
from rentahal.scheduler import billing
from rentahal.store import Query
from rentahal.store.ledger import to_micros
from rentahal.store.models import LedgerKind

SETTINGS = Settings(base_cost_per_query=0.01, cost_per_second=0.001)


def _query(query_type: str = "chat", **options: object) -> Query:
    return Query(id="q1", user_id="alice", query_type=query_type, stage=0, options=options)


def test_the_charge_is_the_base_fee_and_the_seconds_and_debits_the_owner() -> None:
    charge = billing.charge(SETTINGS, _query(), 2.0, premium=False)
    assert charge.cost == pytest.approx(0.012)
    assert charge.row["user_id"] == "alice"
    assert charge.row["kind"] == LedgerKind.QUERY
    assert charge.row["amount"] == -to_micros(0.012)
    assert charge.row["query_id"] == "q1"
    assert charge.row["memo"] == "chat"


def test_premium_is_priced_alike_but_counts_its_energy_at_the_premium_rate() -> None:
    plain = billing.charge(SETTINGS, _query(), 3.0, premium=False)
    premium = billing.charge(SETTINGS, _query(), 3.0, premium=True)
    assert premium.cost == plain.cost
    ratio = SETTINGS.premium_watt_rate / SETTINGS.idle_watt_rate
    assert premium.energy_kwh == pytest.approx(plain.energy_kwh * ratio)


def test_a_step_earns_its_worker_owner_the_seconds_it_served() -> None:
    [row] = billing.earning(SETTINGS, _query("speech"), "gpu-1", "bob", 4.0)
    assert row["user_id"] == "bob"
    assert row["kind"] == LedgerKind.EARNING
    assert row["amount"] == to_micros(0.004)
    assert row["worker_name"] == "gpu-1"
    assert row["memo"] == "stt"  # the step it served, not the query's type


def test_a_worker_nobody_owns_or_no_time_served_earns_no_row() -> None:
    assert billing.earning(SETTINGS, _query(), "cloud", None, 4.0) == []
    assert billing.earning(SETTINGS, _query(), "gpu-1", "bob", 0.0) == []
