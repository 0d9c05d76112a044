"""What the benchmarks tell the person running them (stderr), shared by each benchmark."""

from __future__ import annotations

from rich.console import Console


def note(console: Console | None, text: str) -> None:
    """A dimmed step line ("starting workers…"); nothing without a console."""
    if console is not None:
        console.print(f"[dim]{text}…[/dim]")
