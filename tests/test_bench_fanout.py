"""`rentahal bench fanout --quick` as a user runs it: a broker started for real, a few hundred
bus sockets opened on it (with one user's key, or as guests), a few sysop broadcasts timed to
every listener, the JSON report and the PNG written. No figure is asserted beyond being there
and consistent: the figures are the benchmark's business, not the test's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rentahal.bench.fanout import (
    QUICK_BROADCASTS,
    QUICK_CONNECTIONS,
    QUICK_LISTENERS,
    TARGET_KIB_PER_CONNECTION,
    TARGET_P99,
    FanoutParams,
    slope,
)
from rentahal.cli import app


@pytest.mark.timeout(120)
@pytest.mark.parametrize("identity", ["key", "guest"])
def test_a_quick_run_opens_every_socket_and_every_broadcast_reaches_every_listener(
    tmp_path: Path, identity: str
) -> None:
    args = ["bench", "fanout", "--quick", "--identity", identity, "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--json"])

    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    params = report["params"]
    assert (params["connections"], params["listeners"], params["broadcasts"]) == (
        QUICK_CONNECTIONS,
        QUICK_LISTENERS,
        QUICK_BROADCASTS,
    )
    assert params["identity"] == identity and params["quick"] is True
    # Memory: read before, while and after opening; per connection derived from them.
    assert report["rss_before_kib"] > 0 and report["rss_open_kib"] > 0
    counts = [sample["connections"] for sample in report["rss_samples"]]
    assert counts[0] == 0 and counts[-1] == QUICK_CONNECTIONS and counts == sorted(counts)
    assert report["kib_per_connection"] == pytest.approx(
        (report["rss_open_kib"] - report["rss_before_kib"]) / QUICK_CONNECTIONS
    )
    assert report["memory_ratio"] == pytest.approx(
        report["kib_per_connection"] / TARGET_KIB_PER_CONNECTION
    )
    assert report["open_seconds"] > 0
    assert (
        report["open_files_limit"] >= FanoutParams(QUICK_CONNECTIONS, QUICK_LISTENERS).files_needed
    )
    # Every broadcast reached every listener, each receipt timed.
    assert report["missed"] == 0
    assert [b["index"] for b in report["broadcasts"]] == list(range(QUICK_BROADCASTS))
    for broadcast in report["broadcasts"]:
        assert broadcast["reached"] == QUICK_LISTENERS, broadcast
        spread = broadcast["latency"]
        assert 0 < spread["p50"] <= spread["p99"] <= spread["max"]
        assert broadcast["ack_seconds"] > 0
    latency = report["latency"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert report["latency_ratio"] == pytest.approx(latency["p99"] / TARGET_P99)
    assert 0 < report["typical_broadcast_p99"] <= latency["max"]
    assert report["judged"] is False  # a quick run is not held to the targets
    # The files.
    written = Path(report["report_file"])
    assert written.parent == tmp_path and json.loads(written.read_text())["missed"] == 0
    png = Path(report["plot"])
    assert png.stem == written.stem and png.read_bytes().startswith(b"\x89PNG")


def test_the_tables_say_what_was_measured(tmp_path: Path) -> None:
    args = ["bench", "fanout", "--quick", "--broadcasts", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # no cell wrapped

    assert result.exit_code == 0, result.output + result.stderr
    for words in ("memory per connection", "broadcast p99", "missed receipts", "not judged"):
        assert words in result.stdout, words


@pytest.mark.parametrize(
    "args",
    [
        ["--connections", "10", "--listeners", "11"],  # more listening than connected
        ["--connections", "0"],
    ],
)
def test_bad_parameters_are_refused_before_anything_starts(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "fanout", *args])

    assert result.exit_code == 2, result.output


def test_the_slope_is_least_squares() -> None:
    assert slope([(0, 100), (10, 120), (20, 140)]) == pytest.approx(2.0)
    assert math.isnan(slope([(5, 1), (5, 2)]))
