"""The health-score rules (SPEC §5, the seed's monitor), in one function."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_SCORE = 100.0
READMIT_SCORE = 50.0


class Probe(enum.Enum):
    """What one health check saw."""

    OK = "ok"  # HTTP 200
    BAD_STATUS = "bad_status"  # any other HTTP status
    ERROR = "error"  # connection error or timeout
    SLOW = "slow"  # a real job took longer than slow_job_seconds (passive signal)


@dataclass(frozen=True, slots=True)
class HealthChange:
    score: float
    blacklisted: bool
    event: str | None = None  # "blacklisted" or "readmitted" when the state flipped


def next_health(score: float, blacklisted: bool, probe: Probe, *, exempt: bool) -> HealthChange:
    """+10 on 200 (cap 100); −10 on another status; −5 on error, timeout or a slow job.

    At 0 a worker is blacklisted unless `exempt` (`NO_BLACKLIST_IMAGINE` for imagine workers);
    a blacklisted worker that answers 200 comes back at 50, not at its old score + 10.
    """
    if probe is Probe.OK:
        if blacklisted:
            return HealthChange(READMIT_SCORE, False, "readmitted")
        return HealthChange(min(MAX_SCORE, score + 10), False)
    score = max(0.0, score - (10 if probe is Probe.BAD_STATUS else 5))
    if score == 0 and not blacklisted and not exempt:
        return HealthChange(score, True, "blacklisted")
    return HealthChange(score, blacklisted)
