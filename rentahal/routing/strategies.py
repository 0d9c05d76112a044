"""How a worker is chosen among the candidates of a pool or realm (SPEC §5).

Every strategy picks among candidates that are usable and have a free slot right now.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Literal, get_args

from rentahal.routing.registry import WorkerState

StrategyName = Literal[
    "auto", "health", "round_robin", "least_busy", "random", "fastest", "power_of_two"
]
STRATEGIES: frozenset[str] = frozenset(get_args(StrategyName))


def load(worker: WorkerState) -> float:
    """In-flight jobs per slot: 0 idle, 1 full."""
    return worker.in_flight / worker.max_concurrency


def auto_strategy(candidates: Sequence[WorkerState]) -> StrategyName:
    """The seed's rules: small pools and uneven health go by health; a pool under stress
    (mean health < 70) spreads load; a healthy, even pool takes turns."""
    if len(candidates) <= 2:
        return "health"
    scores = [w.health_score for w in candidates]
    if statistics.pvariance(scores) > 400:
        return "health"
    if statistics.fmean(scores) < 70:
        return "least_busy"
    return "round_robin"


class Chooser:
    """Applies a strategy; keeps a round-robin counter per pool or realm (not one global)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._turns: dict[str, int] = {}
        self._rng = rng or random.Random()

    def choose(self, key: str, strategy: str, candidates: Sequence[WorkerState]) -> WorkerState:
        if not candidates:
            raise ValueError("no candidates")
        if strategy == "auto":
            strategy = auto_strategy(candidates)
        match strategy:
            case "round_robin":
                ordered = sorted(candidates, key=lambda w: w.name)
                turn = self._turns.get(key, -1) + 1
                self._turns[key] = turn
                return ordered[turn % len(ordered)]
            case "least_busy":
                return min(candidates, key=lambda w: (load(w), -w.health_score, w.name))
            case "random":
                return self._rng.choice(list(candidates))
            case "fastest":
                # Unmeasured workers first (latency 0), so every worker gets measured.
                return min(candidates, key=lambda w: (w.ewma_latency or 0.0, load(w), w.name))
            case "power_of_two":
                if len(candidates) == 1:
                    return candidates[0]
                first, second = self._rng.sample(list(candidates), 2)
                return min((first, second), key=lambda w: (load(w), -w.health_score))
            case _:  # "health", the seed's default, and the fallback for anything unknown
                return max(candidates, key=lambda w: (w.health_score, -load(w)))
