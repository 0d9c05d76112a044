"""`rentahal bench reclaim --quick` as a user runs it: two brokers of one cluster on a real
PostgreSQL and Redis, one SIGKILLed mid-run. Figures are the benchmark's business; the test
asserts the report is whole and that nothing was lost or run twice."""

from __future__ import annotations

import json
import math
import os

import pytest
from typer.testing import CliRunner

from rentahal.cli import app
from tests.postgres import pg_admin_url


@pytest.mark.timeout(180)
def test_a_quick_run_loses_nothing_and_runs_nothing_twice() -> None:
    pg = pg_admin_url().render_as_string(hide_password=False)
    redis_url = os.environ.get("RENTAHAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    args = ["--database-url", pg, "--redis-url", redis_url, "--jobs", "8"]
    result = CliRunner().invoke(app, ["bench", "reclaim", "--quick", "--json", *args])

    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["params"]["lease"] == 2.0 and report["params"]["quick"] is True
    assert report["lost"] == 0 and report["run_twice"] == 0
    assert set(report["completions"].values()) == {1}
    assert 0 < report["first_result"] <= report["last_result"]
    # The jobs the dead broker had at the worker cannot run again before its lease lapses.
    assert math.isfinite(report["takeover"])
    assert report["takeover"] >= report["params"]["lease"] * 2 / 3  # renewed every third
    assert "secret" not in result.stdout and pg not in result.stdout
