"""`rentahal bench soak --quick` as a user runs it: the worker stubs and the broker started for
real, a mixed load for 20 s while stubs are SIGKILLed and restarted, the report complete. What
is asserted is what the benchmark promises whatever the machine: every job submitted has an
outcome and none was lost. The figures (latency, memory slope) are the benchmark's business."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rentahal.bench.soak import MIX, QUICK_SECONDS
from rentahal.cli import app
from rentahal.testing.broker import take_tracebacks


@pytest.mark.timeout(150)
def test_a_quick_run_with_workers_killed_loses_no_job(tmp_path: Path) -> None:
    args = ["bench", "soak", "--quick", "--seed", "16", "--out", str(tmp_path), "--json"]
    result = CliRunner().invoke(app, args)

    tracebacks = [t.text for t in take_tracebacks()]  # a worker's crash is no broker's
    assert not tracebacks, "\n\n".join(tracebacks)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["params"]["quick"] is True and report["seed"] == 16
    assert report["lost"] == 0 and report["unanswered"] == 0 and report["missing"] == 0
    assert report["connection_losses"] == []
    assert report["submitted"] > 0
    assert report["submitted"] == report["finished"] + report["failed"] + report["refused"]
    assert sum(report["failures"].values()) == report["failed"] + report["refused"]
    by_type = {figures["query_type"]: figures for figures in report["by_type"]}
    assert list(by_type) == list(MIX)
    for query_type, figures in by_type.items():
        assert figures["finished"] > 0, (query_type, report["failure_samples"])
        latency = figures["latency"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"], query_type
    assert sum(f["submitted"] for f in by_type.values()) == report["submitted"]
    # The kills happened during the load, each stub back after it.
    assert report["kills"], "a quick run kills at least one worker"
    for kill in report["kills"]:
        assert 0 < kill["killed_at"] < kill["restarted_at"] <= QUICK_SECONDS + 5
    # Memory read about every second through the load and the drain.
    memory = report["memory"]
    assert len(memory) >= QUICK_SECONDS * 0.8
    assert all(sample["rss_kib"] > 0 for sample in memory)
    assert report["rss_max_kib"] >= max(report["rss_start_kib"], report["rss_end_kib"])
    assert report["slope_kib_per_minute"] is not None
    assert sum(report["finished_per_second"]) == report["finished"]
    png = Path(report["plot"])
    assert png.parent == tmp_path and png.read_bytes().startswith(b"\x89PNG")
    assert Path(report["report_file"]).is_file()


def test_bad_parameters_are_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(app, ["bench", "soak", "--clients", "0"])

    assert result.exit_code == 2, result.output
