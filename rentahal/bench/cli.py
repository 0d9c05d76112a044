"""`rentahal bench ...`: the benchmarks' command line (registered by `rentahal.cli`).

Progress goes to stderr and results to stdout, so `--json` output can be piped as is.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table

from rentahal.bench.fanout import (
    BROADCAST_TIMEOUT,
    DEFAULT_BROADCASTS,
    DEFAULT_CONNECTIONS,
    DEFAULT_LISTENERS,
    QUICK_BROADCASTS,
    QUICK_CONNECTIONS,
    QUICK_LISTENERS,
    TARGET_KIB_PER_CONNECTION,
    TARGET_P99,
    FanoutParams,
    FanoutReport,
    Identity,
    run_fanout,
)
from rentahal.bench.overhead import (
    DEFAULT_CONCURRENCY,
    DEFAULT_SECONDS,
    OverheadParams,
    OverheadReport,
    json_safe,
    run_overhead,
)
from rentahal.bench.realm import BenchmarkError
from rentahal.bench.reclaim import (
    DEFAULT_LEASE,
    QUICK_LEASE,
    ReclaimParams,
    ReclaimReport,
    run_reclaim,
)
from rentahal.bench.soak import (
    DEFAULT_KILL_EVERY,
    MIX,
    QUICK_KILL_EVERY,
    QUICK_SECONDS,
    SoakParams,
    SoakReport,
    run_soak,
)
from rentahal.bench.soak import DEFAULT_SECONDS as SOAK_SECONDS
from rentahal.bench.speech import EngineFigures, SpeechParams, SpeechReport, run_speech
from rentahal.bench.throughput import (
    FAIRNESS_MEANING,
    GOAL,
    QUICK_JOBS,
    QUICK_USERS,
    ThroughputParams,
    ThroughputReport,
    run_throughput,
)
from rentahal.bench.voice import (
    DEFAULT_OUT,
    QUESTIONS,
    STAGES,
    TARGET_P50,
    TARGET_WORST,
    VoiceParams,
    VoiceReport,
    run_voice,
)
from rentahal.testing.process import ServerStartError

bench_app = typer.Typer(
    help="Benchmarks of the broker and the speech engines (figures, not pass/fail tests).",
    no_args_is_help=True,
)
THROUGHPUT = ThroughputParams()
"""`bench throughput`'s defaults."""


class _Report(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Report)


@contextmanager
def _parameters(err: Console) -> Iterator[None]:
    """Parameters the benchmark refused: said, and exit status 2 (as for a bad option)."""
    try:
        yield
    except ValueError as exc:
        err.print(f"[red]invalid parameters:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _run(
    err: Console,
    benchmark: Coroutine[Any, Any, R],
    *,
    stopped: str,
    as_json: bool,
    tables: Callable[[R], RenderableType],
) -> R:
    """Run a benchmark and print its report: JSON on stdout, or its tables. Exit status 1
    when it could not produce figures, 130 when interrupted (`stopped`: what was stopped)."""
    try:
        report = asyncio.run(benchmark)
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[red]benchmark failed:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted; {stopped}[/yellow]")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(json_safe(report.as_dict()), indent=2, allow_nan=False))
    else:
        Console().print(tables(report))
    return report


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
    workers: Annotated[int, typer.Option(min=1, help="Stub workers (W).")] = THROUGHPUT.workers,
    concurrency: Annotated[
        int, typer.Option(min=1, max=1024, help="max_concurrency of each worker (c).")
    ] = THROUGHPUT.concurrency,
    latency: Annotated[
        float, typer.Option(min=0.001, help="Seconds each stub takes per job (L).")
    ] = THROUGHPUT.latency,
    users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Guest users on the bus (U).",
            show_default=f"{THROUGHPUT.users}; {QUICK_USERS} with --quick",
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Jobs in all (N), split evenly between the users.",
            show_default=f"{THROUGHPUT.jobs}; {QUICK_JOBS} with --quick",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A smoke run: few users and jobs, figures not judged."),
    ] = False,
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
    brokers: Annotated[
        int,
        typer.Option(
            min=1, max=16, help="Broker processes of one cluster (needs --redis-url, postgresql)."
        ),
    ] = 1,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Redis for --brokers over 1, e.g. redis://127.0.0.1:6379/0."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """W stub workers, U users submitting N jobs: achieved vs ideal (W·c/L) throughput.

    Measures the same N jobs sent straight to the stubs and through the broker in one run,
    and reports both against the ideal, with queue wait, latency and fairness. The defaults'
    ideal (320 jobs/s) is above what one broker process does, so broker ÷ ideal is how far
    it is from keeping its workers busy (goal: 0.95). Exits with status 1 if any job failed
    or never finished, whatever the ratio.
    """
    err = Console(stderr=True)
    with _parameters(err):
        params = ThroughputParams(
            workers=workers,
            concurrency=concurrency,
            latency=latency,
            users=users if users is not None else QUICK_USERS if quick else THROUGHPUT.users,
            jobs=jobs if jobs is not None else QUICK_JOBS if quick else THROUGHPUT.jobs,
            database=database.value,
            database_url=database_url,
            quick=quick,
            brokers=brokers,
            redis_url=redis_url,
        )
    report = _run(
        err,
        run_throughput(params, console=err),
        stopped="stub workers and broker stopped",
        as_json=as_json,
        tables=throughput_tables,
    )
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
    _run(
        err,
        run_speech(SpeechParams(repeat=repeat), console=err),
        stopped="workers stopped",
        as_json=as_json,
        tables=speech_tables,
    )


@bench_app.command()
def voice(
    questions: Annotated[
        int,
        typer.Option(min=1, max=len(QUESTIONS), help="How many of the everyday questions to ask."),
    ] = len(QUESTIONS),
    repeat: Annotated[int, typer.Option(min=1, help="Times each question is asked.")] = 1,
    url: Annotated[
        str | None,
        typer.Option(help="A running broker (http://host:port) instead of one started here."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="API key for --url; a sysop's lets the bench wait for the workers."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the timeline PNG.")] = DEFAULT_OUT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """Spoken questions over the bus: end of question → transcript, first text, first
    answer audio, full answer (p50/p90/max) against issue 19's target, with a PNG timeline.

    Starts a broker with the offline stt, chat and tts workers (or uses --url), makes the
    questions with its TTS worker and asks each as the page's voice mode does. Exits with
    status 1 if the workers never get healthy or a turn fails.
    """
    err = Console(stderr=True)
    with _parameters(err):
        params = VoiceParams(questions=questions, repeat=repeat, url=url, api_key=api_key, out=out)
    _run(
        err,
        run_voice(params, console=err),
        stopped="broker and workers stopped",
        as_json=as_json,
        tables=voice_tables,
    )


@bench_app.command()
def overhead(
    concurrency: Annotated[
        str, typer.Option(help="Queries in flight per level (closed loop), comma-separated.")
    ] = ",".join(map(str, DEFAULT_CONCURRENCY)),
    seconds: Annotated[
        float, typer.Option(min=0.1, help="Seconds measured per path and level.")
    ] = DEFAULT_SECONDS,
    requests: Annotated[
        int | None,
        typer.Option(min=1, help="Queries measured per path and level, instead of --seconds."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run: a few queries per level.")
    ] = False,
    litellm: Annotated[
        bool, typer.Option(help="Measure LiteLLM's proxy beside the broker if installed.")
    ] = True,
    litellm_python: Annotated[
        str | None,
        typer.Option(
            help="A Python that has litellm[proxy] (its pins clash with the broker's, so "
            "usually a venv of its own); default: this one, if it imports litellm."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the JSON report and the PNG.")] = (
        OverheadParams().out
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """What the broker adds to a query: a zero-latency stub called directly, through the
    broker's /v1 and bus, and through LiteLLM's proxy (when installed), side by side.

    Reports p50/p99 latency, latency added over the direct call and queries/s at each
    number of queries in flight, with ratios, and writes a JSON report and a PNG plot. Exits
    with status 1 if any query failed.
    """
    err = Console(stderr=True)
    with _parameters(err):
        levels = tuple(int(c) for c in concurrency.split(","))
        params = OverheadParams(
            concurrency=levels,
            seconds=seconds,
            requests=requests,
            quick=quick,
            litellm=litellm,
            litellm_python=litellm_python,
            out=out,
        )
    report = _run(
        err,
        run_overhead(params, console=err),
        stopped="stub, broker and proxy stopped",
        as_json=as_json,
        tables=overhead_tables,
    )
    if report.errors:
        failed = "; ".join(
            f"{p.label}: {p.errors}, e.g. {next(s for lv in p.levels for s in lv.error_samples)}"
            for p in report.paths
            if p.errors
        )
        err.print(f"[red]{report.errors} queries failed:[/red] {escape(failed)}", highlight=False)
        raise typer.Exit(1)


class IdentityChoice(StrEnum):
    key = "key"
    guest = "guest"


@bench_app.command()
def fanout(
    connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Bus connections to open (N).",
            show_default=f"{DEFAULT_CONNECTIONS}; {QUICK_CONNECTIONS} with --quick",
        ),
    ] = None,
    listeners: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Of them, how many listen to broadcasts (M); 0: all of them.",
            show_default=f"{DEFAULT_LISTENERS}; {QUICK_LISTENERS} with --quick",
        ),
    ] = None,
    broadcasts: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sysop broadcasts, one after the other (B).",
            show_default=f"{DEFAULT_BROADCASTS}; {QUICK_BROADCASTS} with --quick",
        ),
    ] = None,
    identity: Annotated[
        IdentityChoice,
        typer.Option(help="Who connects: one user's API key (key) or a new guest each (guest)."),
    ] = IdentityChoice.key,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run: few connections, figures not judged.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for the JSON report and the PNG.")] = (
        FanoutParams().out
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """N open bus connections on one broker process: memory per connection, and how fast a
    sysop broadcast reaches the M that listen (p50/p99/max), against SPEC §16's targets.

    Raises this process's open-files limit to its hard limit first (the broker inherits it).
    Writes a JSON report and a PNG (RSS against connections, latency CDF). Exits with status
    1 if a socket could not be opened or a broadcast missed a listener, whatever the ratios.
    """
    err = Console(stderr=True)
    with _parameters(err):
        total = connections or (QUICK_CONNECTIONS if quick else DEFAULT_CONNECTIONS)
        if listeners is None:  # the default, but never more than there are connections
            listeners = min(QUICK_LISTENERS if quick else DEFAULT_LISTENERS, total)
        params = FanoutParams(
            connections=total,
            listeners=listeners or total,
            broadcasts=broadcasts or (QUICK_BROADCASTS if quick else DEFAULT_BROADCASTS),
            identity=_identity(identity),
            quick=quick,
            out=out,
        )
    report = _run(
        err,
        run_fanout(params, console=err),
        stopped="sockets and broker stopped",
        as_json=as_json,
        tables=fanout_tables,
    )
    if report.missed:
        err.print(f"[red]{report.missed} broadcast receipts never came[/red]")
        raise typer.Exit(1)


def _identity(choice: IdentityChoice) -> Identity:
    return "guest" if choice is IdentityChoice.guest else "key"


def fanout_tables(report: FanoutReport) -> Group:
    """The fan-out report: memory, then broadcast latency, each against its target."""
    p = report.params
    who = "one user's API key" if p.identity == "key" else "a new guest each"
    table = Table(
        title=f"Fan-out: {p.connections} bus connections ({who}), {p.listeners} listening, "
        f"{p.broadcasts} broadcasts",
        title_justify="left",
    )
    table.add_column("figure")
    for column in ("value", "target", "÷ target"):
        table.add_column(column, justify="right")
    table.add_column("meaning")
    table.add_row("broker RSS before", _mib(report.rss_before_kib), "", "", "sysop connected")
    table.add_row("broker RSS, all open", _mib(report.rss_open_kib), "", "", "")
    table.add_row("broker RSS at the end", _mib(report.rss_end_kib), "", "", "after broadcasts")
    table.add_row(
        "memory per connection",
        f"{_num(report.kib_per_connection, 1)} KiB",
        f"{TARGET_KIB_PER_CONNECTION:g} KiB",
        _target_ratio(report.memory_ratio, report.judged),
        "RSS growth ÷ N",
    )
    table.add_row(
        "  marginal",
        f"{_num(report.marginal_kib_per_connection, 1)} KiB",
        "",
        "",
        "slope of RSS against connections",
    )
    cpu = report.broker_open_cpu_seconds
    table.add_row(
        "time to open all",
        _s(report.open_seconds),
        "",
        "",
        f"{p.connections / report.open_seconds:.0f} connections/s"
        + (f", broker CPU {cpu / p.connections * 1000:.2f} ms each" if cpu is not None else ""),
    )
    table.add_section()
    latency = report.latency
    table.add_row("broadcast p50", _ms_text(latency.p50), "", "", "sysop send → listener receipt")
    table.add_row(
        "broadcast p99",
        _ms_text(latency.p99),
        _ms_text(TARGET_P99),
        _target_ratio(report.latency_ratio, report.judged),
        f"over {len(report.receipts)} receipts",
    )
    table.add_row("broadcast max", _ms_text(latency.max), "", "", "")
    table.add_row(
        "typical broadcast p99", _ms_text(report.typical_broadcast_p99), "", "", "median of each"
    )
    worst = max(report.broadcasts, key=lambda b: b.latency.p99)
    table.add_row(
        "worst broadcast p99", _ms_text(worst.latency.p99), "", "", f"broadcast {worst.index}"
    )
    acks = sorted(b.ack_seconds for b in report.broadcasts)
    table.add_row(
        "sysop ack p50", _ms_text(acks[len(acks) // 2]), "", "", "queued for all + audited"
    )
    missed = f"[red]{report.missed}[/red]" if report.missed else "0"
    table.add_row("missed receipts", missed, "0", "", f"none within {BROADCAST_TIMEOUT:g} s")
    if report.broker_broadcast_cpu_seconds is not None:
        per = report.broker_broadcast_cpu_seconds / p.broadcasts
        table.add_row("broker CPU per broadcast", _ms_text(per), "", "", "includes heartbeats")
    table.add_row(
        "load generator CPU",
        _cpu_share(report.loadgen_broadcast_cpu_seconds, report.broadcast_seconds),
        "",
        "",
        "of one core while broadcasting (it stamps the receipts)",
    )
    lines = [
        f"load generator: {_num(report.loadgen_kib_per_connection, 1)} KiB per connection; "
        f"broker open-files limit {report.open_files_limit}",
        "÷ target: at most 1 meets it"
        + ("" if report.judged else " (not judged: below SPEC's N and M, or --quick)"),
        f"report: {report.report_file}; plot: {report.plot or 'none (no matplotlib)'}",
        f"{report.machine}; {report.measured_at}",
    ]
    return Group(table, "[dim]" + escape("\n".join(lines)) + "[/dim]")


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _ms_text(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _target_ratio(value: float, judged: bool) -> str:
    """A ratio to a target: coloured when the run is judged, plain when not."""
    return _ratio(value) if judged else _num(value, 2)


@bench_app.command()
def soak(
    seconds: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Seconds of load.",
            show_default=f"{SOAK_SECONDS:g}; {QUICK_SECONDS:g} with --quick",
        ),
    ] = None,
    clients: Annotated[int, typer.Option(min=1, help="Guests on the bus (C).")] = (
        SoakParams().clients
    ),
    in_flight: Annotated[
        int, typer.Option(min=1, help="Jobs each guest keeps in flight (D).")
    ] = SoakParams().in_flight,
    kill_every: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Mean seconds between two worker kills.",
            show_default=f"{DEFAULT_KILL_EVERY:g}; {QUICK_KILL_EVERY:g} with --quick",
        ),
    ] = None,
    latency: Annotated[
        float, typer.Option(min=0, help="Seconds each stub takes per job.")
    ] = SoakParams().latency,
    drain: Annotated[
        float,
        typer.Option(min=1, help="Seconds allowed after the load for accepted jobs to end."),
    ] = SoakParams().drain,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the mix and the kills (default: random).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run: 20 s with a kill every 5 s or so.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for the JSON report and the PNG.")] = (
        SoakParams().out
    ),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """A mixed chat/vision/speech load on one broker while worker stubs are SIGKILLed and
    restarted at random: every job finished, failed (with the broker's explanation),
    refused or lost, and the broker's memory over time (start/end/max, KiB per minute).

    Writes a JSON report and a PNG (memory and jobs/s against time, kills marked). Exits
    with status 1 if any accepted job was lost or any submission went unanswered.
    """
    err = Console(stderr=True)
    with _parameters(err):
        params = SoakParams(
            seconds=seconds or (QUICK_SECONDS if quick else SOAK_SECONDS),
            clients=clients,
            in_flight=in_flight,
            kill_every=kill_every or (QUICK_KILL_EVERY if quick else DEFAULT_KILL_EVERY),
            latency=latency,
            drain=drain,
            seed=seed,
            quick=quick,
            out=out,
        )
    report = _run(
        err,
        run_soak(params, console=err),
        stopped="stubs and broker stopped",
        as_json=as_json,
        tables=soak_tables,
    )
    if report.missing:
        err.print(
            f"[red]{report.lost} accepted jobs lost, {report.unanswered} submissions "
            f"unanswered:[/red] {escape(str(list(report.lost_samples)))}"
        )
        raise typer.Exit(1)


@bench_app.command()
def reclaim(
    database_url: Annotated[
        str,
        typer.Option(
            help="PostgreSQL server, e.g. postgresql://user:pw@127.0.0.1:5432/postgres; a "
            "database is made for the run and dropped after it."
        ),
    ],
    redis_url: Annotated[str, typer.Option(help="Redis, e.g. redis://127.0.0.1:6379/0.")],
    lease: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="The cluster's lease (s).",
            show_default=f"{DEFAULT_LEASE:g}; {QUICK_LEASE:g} with --quick",
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Jobs submitted (N).")] = 16,
    concurrency: Annotated[int, typer.Option(min=1, help="The worker's slots (c).")] = 4,
    latency: Annotated[float, typer.Option(min=0.01, help="Seconds the worker takes.")] = 2.0,
    quick: Annotated[bool, typer.Option("--quick", help="A smoke run: a 2 s lease.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
) -> None:
    """Two brokers of one cluster; one is SIGKILLed with jobs at the worker and waiting:
    seconds until the other has finished them all, and jobs lost or run twice (both must be
    0). Exits with status 1 if any was."""
    err = Console(stderr=True)
    with _parameters(err):
        params = ReclaimParams(
            database_url=database_url,
            redis_url=redis_url,
            lease=lease or (QUICK_LEASE if quick else DEFAULT_LEASE),
            jobs=jobs,
            concurrency=concurrency,
            latency=latency,
            quick=quick,
        )
    report = _run(
        err,
        run_reclaim(params, console=err),
        stopped="brokers and worker stopped",
        as_json=as_json,
        tables=reclaim_table,
    )
    if report.missing:
        err.print(f"[red]{report.lost} jobs lost, {report.run_twice} run twice[/red]")
        raise typer.Exit(1)


def reclaim_table(report: ReclaimReport) -> Table:
    p = report.params
    table = Table(
        title=f"Take-over: lease {p.lease:g} s, N={p.jobs} jobs, c={p.concurrency} slots, "
        f"L={p.latency:g} s",
        title_justify="left",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    table.add_row("take-over", _s(report.takeover), "the dead broker's jobs sent again")
    table.add_row("lease", _s(p.lease), "they wait at least this long")
    table.add_row("first result", _s(report.first_result), "after the SIGKILL")
    table.add_row("last result", _s(report.last_result), "every job finished")
    table.add_row("lost", str(report.lost), "must be 0")
    table.add_row("run twice", str(report.run_twice), "completed at the worker more than once")
    return table


def soak_tables(report: SoakReport) -> Group:
    """The soak report: what became of the jobs (by type), then the broker's memory."""
    p = report.params
    jobs = Table(
        title=f"Soak: {report.load_seconds:.0f} s of mixed load, {p.clients}×{p.in_flight} in "
        f"flight, {len(report.kills)} worker kills",
        title_justify="left",
    )
    jobs.add_column("query type")
    for column in ("share", "submitted", "finished", "failed", "p50", "p99", "max"):
        jobs.add_column(column, justify="right")
    for figures in report.by_type:
        jobs.add_row(
            figures.query_type,
            f"{MIX[figures.query_type]:.0%}",
            str(figures.submitted),
            str(figures.finished),
            str(figures.failed),
            _s(figures.latency.p50),
            _s(figures.latency.p99),
            _s(figures.latency.max),
        )
    lost = f"[red]{report.lost}[/red]" if report.lost else "[green]0[/green]"
    unanswered = f"[red]{report.unanswered}[/red]" if report.unanswered else "0"
    jobs.add_section()
    jobs.add_row("all", "", str(report.submitted), str(report.finished), str(report.failed))

    outcome = Table(title="Outcomes and memory", title_justify="left")
    outcome.add_column("figure")
    outcome.add_column("value", justify="right")
    outcome.add_column("meaning")
    outcome.add_row("finished", str(report.finished), f"{_num(report.throughput, 1)} jobs/s")
    failures = ", ".join(f"{code} {n}" for code, n in sorted(report.failures.items()))
    outcome.add_row("failed", str(report.failed), "with the broker's explanation")
    outcome.add_row("refused", str(report.refused), "at submission, never accepted")
    outcome.add_row("lost", lost, "accepted, never ended (must be 0)")
    outcome.add_row("unanswered", unanswered, "submission never answered (must be 0)")
    outcome.add_row("drain", _s(report.drain_seconds), "after the load, until the last ended")
    outcome.add_section()
    outcome.add_row("broker RSS at start", _mib(report.rss_start_kib), "")
    outcome.add_row("broker RSS at end", _mib(report.rss_end_kib), "")
    outcome.add_row("broker RSS max", _mib(report.rss_max_kib), "")
    outcome.add_row(
        "RSS slope", f"{_num(report.slope_kib_per_minute, 0)} KiB/min", "over the whole run"
    )
    outcome.add_row(
        "  second half",
        f"{_num(report.late_slope_kib_per_minute, 0)} KiB/min",
        "after warm-up: about 0 if nothing leaks",
    )
    if report.broker_cpu_seconds is not None:
        outcome.add_row(
            "broker CPU",
            _s(report.broker_cpu_seconds),
            f"{_cpu_share(report.broker_cpu_seconds, report.load_seconds)} of one core",
        )
    kills = ", ".join(f"{k.stub} at {k.killed_at:.0f} s" for k in report.kills)
    lines = [
        f"failures by code: {failures or 'none'}",
        *(f"  e.g. {sample}" for sample in report.failure_samples),
        f"kills: {kills or 'none'}",
        *(f"connection lost: {loss}" for loss in report.connection_losses),
        f"seed {report.seed} (--seed repeats the mix and the kills)",
        f"report: {report.report_file}; plot: {report.plot or 'none (no matplotlib)'}",
        f"{report.machine}; {report.measured_at}",
    ]
    if p.quick:
        lines.insert(0, "--quick: a smoke run, too short for memory figures worth reading")
    return Group(jobs, outcome, "[dim]" + escape("\n".join(lines)) + "[/dim]")


def throughput_tables(report: ThroughputReport) -> Group:
    """The report as two rich tables: the three throughputs side by side, then the broker's
    own figures."""
    p = report.params
    title = (
        f"Throughput: W={p.workers} workers × c={p.concurrency}, L={p.latency * 1000:g} ms, "
        f"U={p.users} users, N={p.jobs} jobs, {p.database}"
        + (f", {p.brokers} brokers" if p.brokers > 1 else "")
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

    verdict = _throughput_verdict(report)
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
    quick_note = "--quick: a smoke run, too few jobs for figures worth reading\n" if p.quick else ""
    notes = (
        "[dim]¹ the broker's own figures from query_result. "
        f"² {FAIRNESS_MEANING} (taken at {report.fairness_at} jobs).\n"
        f"{quick_note}{report.machine}; {report.measured_at}[/dim]"
    )
    return Group(side, figures, notes)


def _throughput_verdict(report: ThroughputReport) -> str:
    """How far the broker is from the ideal, in jobs/s, and against the goal when the run is
    the defaults (whose ideal is above the broker's ceiling, so "met" means something)."""
    done = f"{_num(report.broker.throughput, 0)} of {report.ideal_throughput:.0f} jobs/s"
    if report.goal_met is None:
        return f"{done} (goal ≥ {GOAL}: defaults only)"
    outcome = "[green]met[/green]" if report.goal_met else "[red]missed[/red]"
    return f"{done}: goal ≥ {GOAL} {outcome}"


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


def voice_tables(report: VoiceReport) -> Group:
    """The voice report: each stage's p50/p90/max after the question was sent, the first
    audio against the target beside it, then what the listener hears."""
    turns = report.turns
    table = Table(
        title=f"Voice: {len(turns)} spoken turns, times after the end of the question",
        title_justify="left",
    )
    table.add_column("stage")
    for column in ("p50", "p90", "max", "target", "÷ target"):
        table.add_column(column, justify="right")
    p50_ratio, worst_ratio = report.target_ratios
    for name, label in STAGES.items():
        spread = report.stage(name)
        target, ratio = "", ""
        if name == "first_audio":
            target = f"{_s(TARGET_P50)} / {_s(TARGET_WORST)}"
            ratio = f"{_ratio(p50_ratio)} / {_ratio(worst_ratio)}"
        table.add_row(label, _s(spread.p50), _s(spread.p90), _s(spread.max), target, ratio)
    chunks, spoken, gaps = report.chunks, report.spoken, report.gaps
    table.add_row("chunks per answer", f"{chunks.p50:g}", f"{chunks.p90:g}", f"{chunks.max:g}")
    table.add_row("answer spoken", _s(spoken.p50), _s(spoken.p90), _s(spoken.max))
    table.add_row("silence between chunks", _s(gaps.p50), _s(gaps.p90), _s(gaps.max))
    streamed = sum(turn.audio_streamed for turn in turns)
    written = sum(turn.text_streamed for turn in turns)
    lines = [
        f"first audio from speech_chunk in {streamed}/{len(turns)} turns"
        + ("" if streamed == len(turns) else " (the others: the final query_result's audio)"),
        f"first text from query_chunk in {written}/{len(turns)} turns"
        + ("" if written == len(turns) else " (the others: a speech_chunk or query_result)"),
        "÷ target: first audio p50 ÷ 1.5 s / max ÷ 2.5 s (at most 1 meets issue 19's target)",
        f"timeline of one turn: {report.timeline}"
        if report.timeline
        else "no timeline: matplotlib is not installed",
        f"{report.machine}; {report.measured_at}",
    ]
    return Group(table, "[dim]" + escape("\n".join(lines)) + "[/dim]")


def _ratio(value: float) -> str:
    """A ratio to the target, green when met (at most 1) and red when missed."""
    if math.isnan(value):
        return "—"
    colour = "green" if value <= 1 else "red"
    return f"[{colour}]{value:.2f}[/{colour}]"


def overhead_tables(report: OverheadReport) -> Group:
    """The overhead report as two rich tables: every path at every level with what it adds
    over the direct call, then the queries/s ratios level by level."""
    table = Table(
        title="Overhead: a zero-latency stub, queries in flight in a closed loop",
        title_justify="left",
    )
    table.add_column("path")
    for column in ("in flight", "queries/s", "p50 / p99 ms", "added p50 / p99", "CPU/query"):
        table.add_column(column, justify="right")
    table.add_column("failed", justify="right")
    for path in report.paths:
        if path.absent is not None:
            table.add_row(path.label, "absent ¹")
            continue
        for level in path.levels:
            added = report.added(path.key, level.in_flight)
            table.add_row(
                path.label,
                str(level.in_flight),
                _num(level.throughput, 0),
                f"{_ms(level.latency.p50)} / {_ms(level.latency.p99)}",
                "" if path.key == "direct" else f"{_ms(added.p50, True)} / {_ms(added.p99, True)}",
                _ms(level.server_cpu_per_query) + " ms",
                f"[red]{level.errors}[/red]" if level.errors else "0",
            )
        table.add_section()
    return Group(table, _overhead_ratios(report), _overhead_notes(report))


def _overhead_ratios(report: OverheadReport) -> Table:
    """Queries/s of one path over another's, at each level."""
    pairs = [("relay", "direct"), ("v1", "direct"), ("bus", "direct"), ("litellm", "direct")]
    pairs += [("v1", "relay"), ("v1", "litellm"), ("bus", "litellm")]
    short = {"direct": "direct", "relay": "relay", "v1": "/v1", "bus": "bus", "litellm": "LiteLLM"}
    ratios = Table(title="Queries/s ratios", title_justify="left")
    ratios.add_column("in flight", justify="right")
    for mine, other in pairs:
        ratios.add_column(f"{short[mine]} ÷ {short[other]}", justify="right")
    for in_flight in report.params.concurrency:
        ratios.add_row(
            str(in_flight),
            *(_num(report.throughput_ratio(m, o, in_flight), 3) for m, o in pairs),
        )
    return ratios


def _overhead_notes(report: OverheadReport) -> str:
    """What the columns mean, where the files are, and a warning when the load generator
    itself was near a full core."""
    lines = [
        "added: latency over the direct call's at the same number in flight. CPU/query: the "
        "process in the middle (the relay, the broker, the proxy; for the direct path the "
        "stub). The bare relay makes a /v1 query's hops (two commits from a writer thread, "
        "the call to the stub) and nothing else: the floor under any broker in Python here. "
        f"Load generator: {report.client}"
        + (f"; LiteLLM {report.litellm_version}" if report.litellm_version else ""),
    ]
    lines += [f"¹ {p.label}: {p.absent}" for p in report.paths if p.absent is not None]
    busy = [
        f"{p.label} ×{lv.in_flight} ({lv.client_cpu_share:.0%})"
        for p in report.paths
        for lv in p.levels
        if lv.client_cpu_share > 0.9
    ]
    if busy:
        lines.append("the load generator used most of a core at: " + ", ".join(busy))
    if report.params.quick:
        lines.append("--quick: a smoke run, too few queries for figures worth reading")
    lines.append(f"report: {report.report_file}; plot: {report.plot or 'none (no matplotlib)'}")
    lines.append(f"{report.machine}; {report.measured_at}")
    return "[dim]" + escape("\n".join(lines)) + "[/dim]"


def _ms(seconds: float, signed: bool = False) -> str:
    """Milliseconds, with two decimals below 10 ms (a direct call takes well under one)."""
    if math.isnan(seconds):
        return "—"
    ms = seconds * 1000
    digits = 2 if abs(ms) < 10 else 1
    return f"{ms:+.{digits}f}" if signed else f"{ms:.{digits}f}"
