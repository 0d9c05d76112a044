"""How a worker is chosen among the candidates of a pool or realm (SPEC §5).

Every strategy picks among candidates that are usable and have a free slot right now.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

from rentahal.core.vocabulary import Strategy
from rentahal.routing.registry import WorkerState


def load(worker: WorkerState) -> float:
    """In-flight jobs per slot: 0 idle, 1 full."""
    return worker.in_flight / worker.max_concurrency


def auto_strategy(candidates: Sequence[WorkerState]) -> Strategy:
    """The seed's rules: small pools and uneven health go by health; a pool under stress
    (mean health < 70) spreads load; a healthy, even pool takes turns."""
    if len(candidates) <= 2:
        return Strategy.HEALTH
    scores = [w.health_score for w in candidates]
    if statistics.pvariance(scores) > 400:
        return Strategy.HEALTH
    if statistics.fmean(scores) < 70:
        return Strategy.LEAST_BUSY
    return Strategy.ROUND_ROBIN


class Chooser:
    """Applies a strategy; keeps a round-robin counter per pool or realm (not one global)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._turns: dict[str, int] = {}
        self._rng = rng or random.Random()

    def choose(self, key: str, strategy: str, candidates: Sequence[WorkerState]) -> WorkerState:
        if not candidates:
            raise ValueError("no candidates")
        if strategy == Strategy.AUTO:
            strategy = auto_strategy(candidates)
        match strategy:
            case Strategy.ROUND_ROBIN:
                ordered = sorted(candidates, key=lambda w: w.name)
                turn = self._turns.get(key, -1) + 1
                self._turns[key] = turn
                return ordered[turn % len(ordered)]
            case Strategy.LEAST_BUSY:
                return min(candidates, key=lambda w: (load(w), -w.health_score, w.name))
            case Strategy.RANDOM:
                return self._rng.choice(list(candidates))
            case Strategy.FASTEST:
                # Unmeasured workers first (latency 0), so every worker gets measured.
                return min(candidates, key=lambda w: (w.ewma_latency or 0.0, load(w), w.name))
            case Strategy.POWER_OF_TWO:
                if len(candidates) == 1:
                    return candidates[0]
                first, second = self._rng.sample(list(candidates), 2)
                return min((first, second), key=lambda w: (load(w), -w.health_score))
            case _:  # "health", the seed's default, and the fallback for anything unknown
                return max(candidates, key=lambda w: (w.health_score, -load(w)))
