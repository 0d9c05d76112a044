"""The `rentahal` command: `serve`, and `admin …` for the sysop's chores."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from rentahal.admin.catalog import worker_row
from rentahal.config import ConfigFileError, Settings, load_settings
from rentahal.core.errors import ProtocolError
from rentahal.core.specs import WorkerSpec
from rentahal.store import NicknameTaken, Role, Store
from rentahal.store.workers import AlreadyExists

if TYPE_CHECKING:
    from typer import _click as click  # the copy of click that Typer's classes are built on


class _LazyCommands(TyperGroup):
    """`bench` and `worker` are imported only when they run: their modules pull in the
    benchmarks and the worker engines, which `serve` (every broker start) has no use for."""

    # name → (module, attribute: a Typer app or a command function, the one-line help)
    LAZY: ClassVar[dict[str, tuple[str, str, str]]] = {
        "bench": (
            "rentahal.bench.cli",
            "bench_app",
            "Benchmarks of the broker and the speech engines (figures, not pass/fail tests).",
        ),
        "worker": (
            "rentahal.worker.cli",
            "worker",
            "Serve a model with the worker protocol (GET /health, POST /predict).",
        ),
    }
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.LAZY]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.LAZY:
            return super().get_command(ctx, cmd_name)
        module, attribute, summary = self.LAZY[cmd_name]
        if self._listing:  # `rentahal --help` shows the one-line help and nothing more
            return TyperCommand(cmd_name, help=summary)
        loaded = getattr(importlib.import_module(module), attribute)
        if isinstance(loaded, typer.Typer):
            command: click.Command = typer.main.get_group(loaded)
        else:
            single = typer.Typer(add_completion=False)
            single.command(cmd_name)(loaded)
            command = typer.main.get_command(single)
        command.name = cmd_name
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=_LazyCommands, help="RENT A HAL: a self-hosted multi-user AI orchestration broker."
)
admin = typer.Typer(help="Sysop chores that work on the store directly (broker running or not).")
app.add_typer(admin, name="admin")
console = Console(stderr=True)
T = TypeVar("T")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Holds the SQLite database and secrets.")
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML or INI config file.", exists=True)
]


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except (ConfigFileError, ValidationError) as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _with_store(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await Store(settings.resolved_database_url).open()
        try:
            return await action(store)
        finally:
            await store.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 5000).")] = None,
    local_workers: Annotated[
        str | None,
        typer.Option(help="Worker roles to run on this machine too, e.g. stt,tts,chat,vision."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL, e.g. postgresql://user@host:5432/db (default: SQLite)."),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Redis, e.g. redis://host:6379/0: join the brokers sharing it."),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Run the broker (one of a cluster's, with --redis-url: docs/cluster.md)."""
    from rentahal.api.app import create_app
    from rentahal.api.connections import ConnectionLimits, http_concurrency_limit
    from rentahal.api.slow_clients import BodyTimeout, header_timeout_protocol
    from rentahal.logging import configure_logging

    settings = _settings(
        host=host,
        port=port,
        local_workers=local_workers,
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        config_file=config,
    )
    configure_logging(settings)
    # Counted sockets per room, and bodies that must arrive in time, around the whole app.
    app = ConnectionLimits(BodyTimeout(create_app(settings), settings.body_timeout), settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            # Headers that must arrive in time; HTTP refused with 503 over the connection limit.
            http=header_timeout_protocol(settings.header_timeout),
            limit_concurrency=http_concurrency_limit(settings),
            # Frames a little over max_message_size still get a polite `error` from the bus;
            # only far larger ones are cut off by the server itself.
            ws_max_size=max(16 * 1024 * 1024, 4 * settings.max_message_size),
            # Compressing every small JSON event costs more CPU than the bytes are worth.
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=5,
        )
    )
    console.print(f"RENT A HAL broker on http://{settings.host}:{settings.port}")
    server.run()


@admin.command("create-sysop")
def create_sysop(
    nickname: Annotated[str, typer.Argument(help="The sysop's nickname.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a sysop account and print its API key (the last line of output)."""
    settings = _settings(data_dir=data_dir, config_file=config)

    async def create(store: Store) -> str:
        user = await store.users.create(role=Role.SYSOP, nickname=nickname)
        return await store.credentials.create_api_key(user.id, name="create-sysop")

    try:
        key = _with_store(settings, create)
    except NicknameTaken:
        console.print(f"[red]the nickname {nickname!r} is taken[/red]")
        raise typer.Exit(1) from None
    console.print(f"Created sysop {nickname}. Keep this API key secret; it is shown only once:")
    typer.echo(key)


@admin.command("worker-token")
def worker_token(
    owner: Annotated[str, typer.Argument(help="Nickname of the user who owns the worker.")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "worker",
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Issue a worker token: it lets a machine join the realm (`rentahal worker --broker URL
    --token T`) as a worker owned by OWNER, and does nothing else."""
    settings = _settings(data_dir=data_dir, config_file=config)

    async def issue(store: Store) -> str | None:
        user = await store.users.get_by_nickname(owner)
        if user is None:
            return None
        row, key = await store.credentials.issue_api_key(user.id, name=name, scopes=["worker"])
        await store.audit.record(None, "issue_worker_token", owner, {"key_id": row.id})
        return key

    key = _with_store(settings, issue)
    if key is None:
        console.print(f"[red]no user named {owner!r}[/red]")
        raise typer.Exit(1)
    console.print(f"Worker token for {owner}. Keep it secret; it is shown only once:")
    typer.echo(key)


@admin.command("add-worker")
def add_worker(
    name: Annotated[str, typer.Argument(help="Unique worker name.")],
    address: Annotated[str, typer.Argument(help="host:port or URL of the worker.")],
    kind: Annotated[str, typer.Option(help="Protocol: rentahal, ollama or openai.")] = "rentahal",
    type_: Annotated[str, typer.Option("--type", help="Query type it serves.")] = "chat",
    model: Annotated[list[str] | None, typer.Option(help="A model it serves (repeat).")] = None,
    max_concurrency: Annotated[int, typer.Option(help="Jobs it runs at once.")] = 4,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding its API key.")
    ] = None,
    realm: Annotated[
        str | None, typer.Option(help="Its realm, e.g. $CHAT (default: its type's primary).")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Register a worker. A running broker picks it up at its next health check."""
    settings = _settings(data_dir=data_dir, config_file=config)
    try:
        spec = WorkerSpec(
            name=name,
            address=address,
            kind=kind,  # type: ignore[arg-type]
            type=type_,  # type: ignore[arg-type]
            models=model or [],
            max_concurrency=max_concurrency,
            api_key_env=api_key_env,
            realm=realm,
        )
        row = worker_row(spec)
    except ValidationError as exc:
        console.print(f"[red]invalid worker:[/red] {exc}")
        raise typer.Exit(2) from None
    except ProtocolError as exc:
        console.print(f"[red]invalid worker:[/red] {exc.message}")
        raise typer.Exit(2) from None

    async def add(store: Store) -> None:
        await store.workers.add(row)

    try:
        _with_store(settings, add)
    except AlreadyExists:
        console.print(f"[red]a worker named {name!r} already exists[/red]")
        raise typer.Exit(1) from None
    console.print(f"Added worker {name} ({kind}, {type_}) at {address}")


@admin.command("remove-worker")
def remove_worker(
    name: Annotated[str, typer.Argument()], data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Remove a worker."""
    settings = _settings(data_dir=data_dir, config_file=config)
    if not _with_store(settings, lambda store: store.workers.remove(name)):
        console.print(f"[red]no worker named {name!r}[/red]")
        raise typer.Exit(1)
    console.print(f"Removed worker {name}")


@admin.command("list-workers")
def list_workers(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Show the registered workers and their last known health."""
    settings = _settings(data_dir=data_dir, config_file=config)
    workers = _with_store(settings, lambda store: store.workers.list())
    table = Table("name", "realm", "kind", "types", "address", "slots", "health", "blacklisted")
    for w in workers:
        table.add_row(
            w.name,
            w.realm or "(primary)",
            w.kind,
            ",".join(w.capabilities),
            w.address,
            str(w.max_concurrency),
            f"{w.health_score:.0f}",
            "yes" if w.blacklisted else "no",
        )
    Console().print(table)


def main() -> None:
    app()
