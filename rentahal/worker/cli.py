"""`rentahal worker`: rent out this machine's model to a realm with one command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rentahal.backends import BACKENDS
from rentahal.worker.engines import ENGINES, EngineUnavailable
from rentahal.worker.node import DEFAULT_PORTS, NodeConfig, run_node

console = Console(stderr=True)


def worker(
    role: Annotated[
        str,
        typer.Option(
            help="What it serves: " + ", ".join(ENGINES) + ", or proxy (see --upstream).",
            show_default=False,
        ),
    ],
    engine: Annotated[
        str | None, typer.Option(help="Engine (default: the best one installed).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model file or directory (default: the offline one).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(help="Port (default by role: " + str(DEFAULT_PORTS).strip("{}") + ")."),
    ] = None,
    slots: Annotated[int, typer.Option(min=1, max=64, help="Requests run at once.")] = 1,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0: the library's choice).")] = 0,
    name: Annotated[
        str | None, typer.Option(help="Name in the realm (default: role-xxxxxx).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="URL the broker uses to reach this worker.")
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="Broker URL to join, e.g. http://host:5000.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="RENTAHAL_WORKER_TOKEN", help="Worker token from the sysop."),
    ] = None,
    outbound: Annotated[
        bool, typer.Option(help="Dial the broker and take jobs over that socket (behind NAT).")
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RENTAHAL_WORKER_KEY", help="Key callers of /predict must send."),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="Proxy: the server to stand in front of, e.g. http://127.0.0.1:11434."),
    ] = None,
    upstream_kind: Annotated[
        str, typer.Option(help="Proxy: its protocol (ollama, openai or rentahal).")
    ] = "ollama",
    serves: Annotated[
        str, typer.Option(help="Proxy: the query type it serves (chat, vision, imagine…).")
    ] = "chat",
    debug: Annotated[bool, typer.Option(help="Verbose logs.")] = False,
) -> None:
    """Serve a model with the worker protocol (GET /health, POST /predict)."""
    from rentahal.logging import configure

    configure([s for s in (token, api_key) if s], debug=debug)
    if outbound and not broker:
        console.print("[red]--outbound needs --broker[/red]")
        raise typer.Exit(2)
    if broker and not token:
        console.print(
            "[red]joining a broker needs a worker token (--token or RENTAHAL_WORKER_TOKEN)[/red]"
        )
        raise typer.Exit(2)
    if role == "proxy" and not upstream:
        console.print("[red]--role proxy needs --upstream URL[/red]")
        raise typer.Exit(2)
    if upstream_kind not in BACKENDS:
        console.print(f"[red]--upstream-kind is one of: {', '.join(BACKENDS)}[/red]")
        raise typer.Exit(2)
    config = NodeConfig(
        role=role,
        engine=engine,
        model=model,
        host=host,
        port=port,
        slots=slots,
        threads=threads,
        name=name,
        address=address,
        broker=broker.rstrip("/") if broker else None,
        token=token,
        outbound=outbound,
        api_key=api_key,
        upstream=upstream,
        upstream_kind=upstream_kind,
        serves=serves,
    )
    try:
        status = asyncio.run(run_node(config))
    except EngineUnavailable as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    raise typer.Exit(status)
