"""The cost formula, in one place (SPEC §10).

The seed billed `base_cost_per_query + cost_per_second × seconds`, with seconds counted from
enqueue, so users paid for time spent waiting in the queue. Here `seconds` is the worker's
processing time only; the queue wait is recorded beside it but not billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rentahal.config import Settings


@dataclass(frozen=True, slots=True)
class QueryCost:
    cost: float
    """What the user is charged: base + per-second rate."""
    energy_kwh: float
    """Electricity the worker used, from the watt rate."""
    energy_cost: float
    """That electricity at `electricity_cost_per_kwh` (the worker owner's view)."""


def owner_earning(settings: Settings, processing_time: float) -> float:
    """What a worker's owner earns for a job: the per-second part of its price, for the
    seconds their worker served it. The base fee per query is the realm's."""
    return settings.cost_per_second * max(0.0, processing_time)


def query_cost(settings: Settings, processing_time: float, *, premium: bool = False) -> QueryCost:
    seconds = max(0.0, processing_time)
    watts = settings.premium_watt_rate if premium else settings.idle_watt_rate
    energy_kwh = watts * seconds / 3_600_000
    return QueryCost(
        cost=settings.base_cost_per_query + settings.cost_per_second * seconds,
        energy_kwh=energy_kwh,
        energy_cost=energy_kwh * settings.electricity_cost_per_kwh,
    )
