"""Pools: `$NAME` aliases for a set of workers, each with a selection strategy (SPEC §5)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rentahal.routing.registry import WorkerState
from rentahal.store.models import Pool

ALIAS = re.compile(r"^\$[A-Z0-9_]+$")


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
    (the seed's `find_specialized_workers`). A keyword matches as a whole word or phrase,
    symbols included (`c++`, `node.js`), case-insensitively."""
    if not prompt or not any(w.specializations for w in candidates):
        return candidates
    text = prompt.lower()

    def mentioned(keyword: str) -> bool:
        parts = keyword.lower().split()
        if not parts:
            return False
        phrase = r"\s+".join(re.escape(part) for part in parts)
        return re.search(rf"(?<![a-z0-9]){phrase}(?![a-z0-9])", text) is not None

    chosen = [
        worker
        for worker in candidates
        if any(mentioned(k) for keywords in worker.specializations.values() for k in keywords)
    ]
    return chosen or candidates
