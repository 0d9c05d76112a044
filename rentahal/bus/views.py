"""Store rows and live worker state as the views the bus sends."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rentahal.bus import events
from rentahal.bus.events import QueryView, StatsView, UserView
from rentahal.core.errors import ErrorCode
from rentahal.core.spotting import spot
from rentahal.core.stages import speaks
from rentahal.store import Query, QueryState, SystemStats, User
from rentahal.store.queries import UnfinishedQuery
from rentahal.store.stats import Timeline


def user_view(user: User) -> UserView:
    return UserView(
        guid=user.id,
        nickname=user.nickname,
        role=user.role,
        is_sysop=user.is_sysop,
        is_banned=user.is_banned,
        query_count=user.query_count,
        total_query_time=user.total_query_time,
        total_cost=user.total_cost,
    )


def query_view(query: Query) -> QueryView:
    return QueryView(
        query_id=query.id,
        prompt=query.prompt,
        query_type=query.query_type,
        model_type=query.model_type,
        model_name=query.model_name,
        state=query.state,
        worker=query.worker_name,
        result=query.result,
        result_type=query.result_type,
        error=query.error,
        processing_time=query.processing_time,
        cost=query.cost,
        timestamp=query.created_at,
        output_url=f"/api/v1/queries/{query.id}/output" if has_output(query) else None,
    )


def has_output(query: Query) -> bool:
    """A finished query that made audio or an image (kept apart from its text)."""
    if query.state != QueryState.DONE:
        return False
    return query.result_type in ("audio", "image") or speaks(query.query_type, query.options)


def stats_view(stats: SystemStats, connected_users: int) -> StatsView:
    return StatsView(
        total_queries=stats.total_queries,
        total_processing_time=stats.total_processing_time,
        total_cost=stats.total_cost,
        last_updated=stats.last_updated,
        max_connected_users=max(stats.max_connected_users, connected_users),
        connected_users=connected_users,
        average_times=stats.average_times,
        by_type={
            query_type: events.TypeStatsView(
                queries=t.queries, processing_time=t.processing_time, cost=t.cost
            )
            for query_type, t in stats.by_type.items()
        },
    )


def running_query_view(query: UnfinishedQuery, now: datetime) -> events.RunningQueryView:
    return events.RunningQueryView(
        query_id=query.id,
        user_guid=query.user_id,
        nickname=query.nickname,
        query_type=query.query_type,
        model_name=query.model_name,
        state=query.state,
        worker=query.worker_name,
        realm=query.realm,
        prompt=query.prompt,
        created_at=query.created_at,
        waited=round(max(0.0, (now - query.created_at).total_seconds()), 3),
    )


def timeline_view(timeline: Timeline) -> events.TimelineView:
    """The store's series split as the charts draw them: counts, and latencies apart."""
    return events.TimelineView(
        bucket_seconds=timeline.bucket_seconds,
        start=timeline.start,
        buckets=timeline.buckets,
        by_type={name: line.counts for name, line in timeline.by_type.items()},
        latency_by_type={name: line.latencies for name, line in timeline.by_type.items()},
        by_worker={name: line.counts for name, line in timeline.by_worker.items()},
        latency_by_worker={name: line.latencies for name, line in timeline.by_worker.items()},
    )


def final_event(query: Query, vocabulary: Iterable[str]) -> events.Outbound:
    """The event that ends a query for its owner: its result, or why there is none (each
    says so on the wire, `is_final`).

    Speech-to-text ends in `transcription_result` and text-to-speech in `speech_result`, as
    the seed's client expects; media results travel base64 in `result`, as in the seed. A
    transcript asked to be spotted (`speech_to_text {spot}`) lists the words of `vocabulary`
    it holds (the broker's is `Scheduler.vocabulary`)."""
    if query.state != QueryState.DONE:
        return events.Error(
            code=query.error_code or ErrorCode.INTERNAL,
            message=query.error or f"query {query.state}",
            query_id=query.id,
        )
    time, cost = round(query.processing_time or 0.0, 4), round(query.cost or 0.0, 6)
    if query.query_type == "stt":
        text = query.result or ""
        return events.TranscriptionResult(
            query_id=query.id,
            text=text,
            processing_time=time,
            cost=cost,
            spotted=spot(text, vocabulary) if query.options.get("spot") else [],
        )
    if query.query_type == "tts":
        return events.SpeechResult(
            query_id=query.id, audio=query.output or "", processing_time=time, cost=cost
        )
    media = query.result_type in ("audio", "image")
    result = events.QueryResult(
        query_id=query.id,
        result=(query.output if media else query.result) or "",
        result_type=query.result_type or "text",
        processing_time=time,
        cost=cost,
        queue_wait=round(query.queue_wait or 0.0, 4),
        worker=query.worker_name,
    )
    if query.query_type == "speech" or speaks(query.query_type, query.options):
        return events.QueryResultWithMedia(
            **result.model_dump(exclude={"result", "result_type", "is_final"}),
            result=query.result or "",
            result_type="text",
            transcript=query.prompt if query.query_type == "speech" else "",
            audio=query.output,
        )
    return result
