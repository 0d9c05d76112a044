"""The sysop's dashboard figures: the system's stats now, and queries over time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from rentahal.admin.dashboard import TIMELINE_BUCKET, TIMELINE_WINDOW
from rentahal.api.deps import BrokerDep, SysopDep
from rentahal.bus import events

router = APIRouter()


@router.get("/stats", tags=["stats"])
async def system_stats(_: SysopDep, broker: BrokerDep) -> events.StatsView:
    return (await broker.dashboard.system_stats()).data


TimelineWindow = Annotated[int, Query(ge=60, le=86400, description="Seconds back from now.")]
TimelineBucket = Annotated[int, Query(ge=10, le=3600, description="Seconds per bucket.")]


@router.get("/stats/timeline", tags=["stats"])
async def stats_timeline(
    _: SysopDep,
    broker: BrokerDep,
    window: TimelineWindow = TIMELINE_WINDOW,
    bucket: TimelineBucket = TIMELINE_BUCKET,
) -> events.TimelineView:
    """Queries that ended, counted per bucket by type and by worker, with the mean
    processing time of those done; at most 500 buckets."""
    return (await broker.dashboard.stats_timeline(window, bucket)).data
