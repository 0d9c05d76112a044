"""`rentahal bench overhead --quick` as a user runs it: the stub, the broker and (when it is
installed) LiteLLM's proxy started for real, every path measured at every level, the tables
printed and the JSON report and PNG written. No figure is asserted beyond being there: the
figures are the benchmark's business, not the test's."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rentahal.bench.overhead import DEFAULT_CONCURRENCY, PATHS
from rentahal.cli import app

LITELLM_PYTHON = os.environ.get("RENTAHAL_TEST_LITELLM_PYTHON")
"""An interpreter with litellm[proxy] (a venv of its own: its pins clash with ours), to
measure LiteLLM's proxy here too; without it, only if this interpreter imports litellm."""


@pytest.mark.timeout(420)  # LiteLLM's proxy, when installed, takes long to import
def test_a_quick_run_measures_every_path_at_every_level(tmp_path: Path) -> None:
    args = ["bench", "overhead", "--quick", "--out", str(tmp_path)]
    if LITELLM_PYTHON:
        args += ["--litellm-python", LITELLM_PYTHON]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output + result.stderr
    assert "Overhead" in result.stdout and "Queries/s ratios" in result.stdout  # the tables
    (written,) = tmp_path.glob("overhead-*.json")
    report = json.loads(written.read_text())
    assert report["report_file"] == str(written)
    paths = {path["key"]: path for path in report["paths"]}
    assert list(paths) == list(PATHS)

    litellm = paths["litellm"]
    if not LITELLM_PYTHON and importlib.util.find_spec("litellm") is None:
        assert "not installed" in litellm["absent"] and litellm["levels"] == []
        measured = ["direct", "relay", "v1", "bus"]
    else:
        assert litellm["absent"] is None, litellm["absent"]
        assert report["litellm_version"]
        measured = list(PATHS)
    for key in measured:
        levels = paths[key]["levels"]
        assert [level["in_flight"] for level in levels] == list(DEFAULT_CONCURRENCY), key
        for level in levels:
            _assert_measured(key, level)

    png = Path(report["plot"])
    assert png.parent == tmp_path and png.stem == written.stem
    assert png.read_bytes().startswith(b"\x89PNG")


def _assert_measured(key: str, level: dict[str, Any]) -> None:
    """Every query of the level answered, and every figure there and positive."""
    in_flight = level["in_flight"]
    assert level["errors"] == 0 and level["error_samples"] == [], (key, level)
    assert level["completed"] == 2 * in_flight + 8  # --quick's budget
    assert level["seconds"] > 0 and level["throughput"] > 0
    assert 0 < level["latency"]["p50"] <= level["latency"]["p99"]
    assert level["client_cpu_seconds"] > 0
    assert level["server_cpu_per_query"] is None or level["server_cpu_per_query"] >= 0
    if key == "direct":
        assert level["added"] == {"p50": 0, "p99": 0} and level["vs_direct"] == 1
    else:
        assert level["vs_direct"] > 0
        assert level["added"]["p50"] is not None and level["added"]["p99"] is not None


def test_bad_levels_are_refused_before_anything_starts() -> None:
    for levels in ("1,x", "0,4", "4,4"):
        result = CliRunner().invoke(app, ["bench", "overhead", "--concurrency", levels])

        assert result.exit_code == 2, (levels, result.output)
        assert "invalid parameters" in result.stderr
