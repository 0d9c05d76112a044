"""`rentahal bench ...`: the benchmarks' command line (registered by `rentahal.cli`).

Progress goes to stderr and results to stdout, so `--json` output can be piped as is.
"""

from __future__ import annotations

import asyncio
import json
import math
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from rentahal.bench.realm import BenchmarkError
from rentahal.bench.speech import EngineFigures, SpeechParams, SpeechReport, run_speech
from rentahal.bench.throughput import (
    FAIRNESS_MEANING,
    ThroughputParams,
    ThroughputReport,
    run_throughput,
)
from rentahal.testing.process import ServerStartError

bench_app = typer.Typer(
    help="Benchmarks of the broker and the speech engines (figures, not pass/fail tests).",
    no_args_is_help=True,
)
TARGET_RATIO = 0.9
"""The issue's target for broker/ideal throughput with the default parameters."""


@bench_app.callback()
def bench() -> None:
    """Benchmarks of the broker and the speech engines (figures, not pass/fail tests)."""
    # A callback keeps `bench` a command group while it has a single command, so
    # `rentahal bench throughput` works the same before and after more benchmarks exist.


class DatabaseChoice(StrEnum):
    sqlite = "sqlite"
    postgresql = "postgresql"


@bench_app.command()
def throughput(
    workers: Annotated[int, typer.Option(min=1, help="Stub workers (W).")] = 4,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="max_concurrency of each worker (c).")
    ] = 4,
    latency: Annotated[
        float, typer.Option(min=0.001, help="Seconds each stub takes per job (L).")
    ] = 0.2,
    users: Annotated[int, typer.Option(min=1, help="Guest users on the bus (U).")] = 20,
    jobs: Annotated[
        int, typer.Option(min=1, help="Jobs in all (N), split evenly between the users.")
    ] = 400,
    database: Annotated[
        DatabaseChoice, typer.Option(help="The broker's store.")
    ] = DatabaseChoice.sqlite,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL server for --database postgresql, e.g. "
            "postgresql://user:pw@127.0.0.1:5432/postgres; a database is created for the "
            "run and dropped after it (the role needs CREATEDB)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """W stub workers, U users submitting N jobs: achieved vs ideal (W·c/L) throughput.

    Measures the same N jobs sent straight to the stubs and through the broker in one run,
    and reports both against the ideal, with queue wait, latency and fairness. Exits with
    status 1 if any job failed or never finished.
    """
    err = Console(stderr=True)
    try:
        params = ThroughputParams(
            workers=workers,
            concurrency=concurrency,
            latency=latency,
            users=users,
            jobs=jobs,
            database=database.value,
            database_url=database_url,
        )
    except ValueError as exc:
        err.print(f"[red]invalid parameters:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        report = asyncio.run(run_throughput(params, console=err))
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[red]benchmark failed:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; stub workers and broker stopped[/yellow]")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(_json_safe(report.as_dict()), indent=2, allow_nan=False))
    else:
        Console().print(throughput_tables(report))
    if report.errors:
        samples = escape(str(list(report.error_samples)))
        err.print(f"[red]{report.errors} error messages[/red], the first: {samples}")
        raise typer.Exit(1)


@bench_app.command()
def speech(
    repeat: Annotated[
        int, typer.Option(min=1, help="Timed passes per engine in process, after a warm-up.")
    ] = 3,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """STT and TTS engines installed here: seconds per request, real-time factor, accuracy.

    Each TTS engine speaks a fixed set of sentences; each STT engine transcribes those clips.
    Every engine is timed in process and through a real `rentahal worker` (/predict) side by
    side. Exits with status 1 if no STT or no TTS engine can run here, or an engine fails.
    """
    err = Console(stderr=True)
    try:
        report = asyncio.run(run_speech(SpeechParams(repeat=repeat), console=err))
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[red]benchmark failed:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; workers stopped[/yellow]")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(_json_safe(report.as_dict()), indent=2, allow_nan=False))
    else:
        Console().print(speech_tables(report))


def _json_safe(value: object) -> object:
    """NaN (a figure with no samples) as null: NaN is not JSON and breaks strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def throughput_tables(report: ThroughputReport) -> Group:
    """The report as two rich tables: the three throughputs side by side, then the broker's
    own figures."""
    p = report.params
    title = (
        f"Throughput: W={p.workers} workers × c={p.concurrency}, L={p.latency * 1000:g} ms, "
        f"U={p.users} users, N={p.jobs} jobs, {p.database}"
    )
    side = Table(title=title, title_justify="left")
    side.add_column("")
    side.add_column("jobs/s", justify="right")
    side.add_column("÷ ideal", justify="right")
    side.add_column("wall time", justify="right")
    side.add_column("latency p50", justify="right")
    side.add_column("latency p99", justify="right")
    ideal = report.ideal_throughput
    side.add_row("ideal (W·c/L)", f"{ideal:.1f}", "1.000", _s(p.jobs / ideal), "", "")
    for name, phase, ratio in (
        ("direct to stubs", report.direct, report.direct_vs_ideal),
        ("through broker", report.broker, report.broker_vs_ideal),
    ):
        side.add_row(
            name,
            _num(phase.throughput, 1),
            _num(ratio, 3),
            _s(phase.seconds),
            _s(phase.latency.p50),
            _s(phase.latency.p99),
        )

    defaults = ThroughputParams()
    if (p.workers, p.concurrency, p.latency, p.users, p.jobs) == (
        defaults.workers,
        defaults.concurrency,
        defaults.latency,
        defaults.users,
        defaults.jobs,
    ):
        met = report.broker_vs_ideal >= TARGET_RATIO
        verdict = f"target ≥ {TARGET_RATIO}: " + (
            "[green]met[/green]" if met else "[red]missed[/red]"
        )
    else:
        verdict = f"target ≥ {TARGET_RATIO} is for the defaults"
    figures = Table(title="Through the broker", title_justify="left")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    figures.add_column("meaning")
    figures.add_row("broker ÷ ideal", _num(report.broker_vs_ideal, 3), verdict)
    figures.add_row("broker ÷ direct", _num(report.broker_vs_direct, 3), "cost of the broker")
    figures.add_row("queue wait p50", _s(report.queue_wait.p50), "accepted → dispatched ¹")
    figures.add_row("queue wait p99", _s(report.queue_wait.p99), "")
    figures.add_row(
        "worker time p50", _s(report.processing_time.p50), f"the stub sleeps {_s(p.latency)} ¹"
    )
    figures.add_row("worker time p99", _s(report.processing_time.p99), "")
    figures.add_row("all accepted", _s(report.submit_seconds), "after the first submission")
    figures.add_row("first user done", _s(report.user_finish_first), "had all their answers")
    figures.add_row("last user done", _s(report.user_finish_last), "")
    figures.add_row("fairness (Jain)", _num(report.fairness, 3), "² 1.0 = all users alike")
    figures.add_row(
        "fairness if FIFO", _num(report.fairness_fifo, 3), "² same, in order of acceptance"
    )
    if report.broker_cpu_seconds is not None:
        figures.add_row(
            "broker CPU",
            _s(report.broker_cpu_seconds),
            f"{_cpu_share(report.broker_cpu_seconds, report.broker.seconds)} of one core, "
            f"{report.broker_cpu_seconds / p.jobs * 1000:.1f} ms/job",
        )
    if report.loadgen_cpu_seconds is not None:
        figures.add_row(
            "load generator CPU",
            _s(report.loadgen_cpu_seconds),
            f"{_cpu_share(report.loadgen_cpu_seconds, report.broker.seconds)} of one core",
        )
    errors = f"[red]{report.errors}[/red]" if report.errors else "0"
    figures.add_row("errors", errors, "error messages received")
    notes = (
        "[dim]¹ the broker's own figures from query_result. "
        f"² {FAIRNESS_MEANING} (taken at {report.fairness_at} jobs).\n"
        f"{report.machine}; {report.measured_at}[/dim]"
    )
    return Group(side, figures, notes)


def _num(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _cpu_share(cpu: float, wall: float) -> str:
    return f"{cpu / wall:.0%}" if wall > 0 else "—"


def _s(seconds: float) -> str:
    """Seconds, shown as ms below one second."""
    if math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def speech_tables(report: SpeechReport) -> Group:
    """The speech report as two rich tables, TTS then STT, each engine in process beside
    through its worker, then a line per engine for what does not fit a column."""
    tts = _speech_table(f"TTS: seconds per sentence ({len(report.params.sentences)} sentences)")
    for t in report.tts:
        _speech_rows(tts, t)
    stt = _speech_table("STT: seconds per clip (the TTS engines' clips)")
    for s in report.stt:
        _speech_rows(stt, s)
    lines = [
        f"{t.engine}: {t.model}, loaded in {_s(t.load_seconds)}, "
        f"{t.audio_seconds.p50:.2f} s of speech per sentence (p50)"
        for t in report.tts
    ]
    for s in report.stt:
        exact = ", ".join(f"{src} {s.matched[src]}/{n}" for src, n in s.clips.items())
        engine = s.through_worker.engine_seconds
        in_worker = f"; in its worker the engine took {_s(engine.p50)} (p50)" if engine else ""
        lines.append(
            f"{s.engine}: {s.model}, loaded in {_s(s.load_seconds)}; "
            f"exact transcripts: {exact}{in_worker}"
        )
        lines += [
            f"  missed ({m.source}): {m.sentence!r} heard as {m.transcript!r}" for m in s.misses
        ]
    p = report.params
    lines += [
        "RTF: processing seconds ÷ seconds of speech (below 1: faster than real time). "
        f"In process: {p.repeat} timed pass(es), through worker (POST /predict to "
        f"`rentahal worker`): {p.worker_passes}, each after a warm-up request.",
        f"{report.machine}; {report.measured_at}",
    ]
    notes = "[dim]" + escape("\n".join(lines)) + "[/dim]"
    return Group(tts, stt, notes)


def _speech_table(title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for column in ("p50", "p90", "RTF p50", "RTF p90", "÷ in-proc"):
        table.add_column(column, justify="right")
    return table


def _speech_rows(table: Table, figures: EngineFigures) -> None:
    """Two rows for an engine: in process, then through its worker with the ratio."""
    for how, timing, ratio in (
        ("in process", figures.in_process, ""),
        ("via worker", figures.through_worker, _num(figures.worker_overhead, 2)),
    ):
        table.add_row(
            f"{figures.engine}, {how}",
            _s(timing.seconds.p50),
            _s(timing.seconds.p90),
            _num(timing.rtf.p50, 3),
            _num(timing.rtf.p90, 3),
            ratio,
        )
