"""When and on what a benchmark ran: stamped on every report, so figures are never read
without their machine."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime


def measured_now() -> str:
    """Now, in UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def this_machine() -> str:
    """Its CPUs, architecture, system and Python."""
    return (
        f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}, "
        f"Python {platform.python_version()}"
    )
