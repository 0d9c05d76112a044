"""Pools: `$NAME` aliases for a set of workers, each with a selection strategy (SPEC §5)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rentahal.routing.registry import WorkerState
from rentahal.store.models import Pool

ALIAS = re.compile(r"^\$[A-Z0-9_]+$")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(slots=True)
class PoolState:
    name: str
    query_type: str
    members: tuple[str, ...]
    strategy: str = "auto"

    @classmethod
    def from_row(cls, row: Pool) -> PoolState:
        return cls(row.name, row.query_type, tuple(row.members), row.strategy)


def specialists(candidates: Sequence[WorkerState], prompt: str) -> Sequence[WorkerState]:
    """Workers with a specialisation keyword in the prompt; all candidates if none match
    (the seed's `find_specialized_workers`). Multi-word keywords match as phrases."""
    if not prompt or not any(w.specializations for w in candidates):
        return candidates
    text = prompt.lower()
    words = set(_WORD.findall(text))

    def mentioned(keyword: str) -> bool:
        keyword = keyword.lower().strip()
        return bool(keyword) and (keyword in text if " " in keyword else keyword in words)

    chosen = [
        worker
        for worker in candidates
        if any(mentioned(k) for keywords in worker.specializations.values() for k in keywords)
    ]
    return chosen or candidates
