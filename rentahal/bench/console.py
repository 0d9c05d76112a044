"""What the benchmarks tell the person running them (stderr), shared by each benchmark."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


def note(console: Console | None, text: str) -> None:
    """A dimmed step line ("starting workers…"); nothing without a console."""
    if console is not None:
        console.print(f"[dim]{text}…[/dim]")


def progress_bars(console: Console | None, width: int, *counted: ProgressColumn) -> Progress:
    """Progress bars on ``console`` (disabled ones without a console): a description
    `width` characters wide, the bar, done of total followed by the `counted` columns (what
    is counted, errors so far), and the time elapsed."""
    return Progress(
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        *counted,
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    )
