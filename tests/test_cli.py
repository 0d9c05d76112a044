"""The `rentahal` command line, run as a real process the way users and scripts run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import httpx

from rentahal.testing.broker import BrokerProcess, run_cli
from rentahal.testing.process import ServerProcess, free_port
from rentahal.testing.waiting import eventually


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rentahal", *args], capture_output=True, text=True, timeout=60
    )


async def test_create_sysop_prints_a_working_api_key_last(tmp_path: Path) -> None:
    output = run_cli("admin", "create-sysop", "captain", data_dir=tmp_path)
    key = output.strip().splitlines()[-1]
    assert key.startswith("rah_") and len(key) > 40

    again = cli("admin", "create-sysop", "captain", "--data-dir", str(tmp_path))
    assert again.returncode == 1 and "taken" in again.stderr

    async with BrokerProcess(tmp_path) as broker, httpx.AsyncClient() as client:
        me = await client.get(f"{broker.url}/api/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json()["nickname"] == "captain" and me.json()["role"] == "sysop"
        wrong = await client.get(
            f"{broker.url}/api/v1/me", headers={"Authorization": f"Bearer {key[:-2]}xx"}
        )
        assert wrong.status_code == 401


async def test_workers_added_by_cli_reach_a_running_broker(tmp_path: Path) -> None:
    key = run_cli("admin", "create-sysop", "captain", data_dir=tmp_path).strip().splitlines()[-1]
    env = {"RENTAHAL_HEALTH_CHECK_INTERVAL": "0.2"}
    async with BrokerProcess(tmp_path, env=env) as broker, httpx.AsyncClient() as client:
        run_cli(
            "admin", "add-worker", "gpu1", "10.0.0.5:11434", "--kind", "ollama", "--type",
            "chat", "--model", "llama3", "--max-concurrency", "2", data_dir=tmp_path,
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {key}"}

        async def names() -> list[str]:
            response = await client.get(f"{broker.url}/api/v1/workers", headers=headers)
            return [w["name"] for w in response.json()]

        # The broker re-reads the store at each health check (every 0.2 s here).
        await eventually(lambda: _equals(names(), ["gpu1"]))

    listing = run_cli("admin", "list-workers", data_dir=tmp_path)
    assert "gpu1" in listing and "ollama" in listing
    duplicate = cli("admin", "add-worker", "gpu1", "x:1", "--data-dir", str(tmp_path))
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad_kind = cli(
        "admin", "add-worker", "w2", "x:1", "--kind", "gopher", "--data-dir", str(tmp_path)
    )
    assert bad_kind.returncode == 2 and "invalid worker" in bad_kind.stderr
    run_cli("admin", "remove-worker", "gpu1", data_dir=tmp_path)
    assert "gpu1" not in run_cli("admin", "list-workers", data_dir=tmp_path)
    missing = cli("admin", "remove-worker", "gpu1", "--data-dir", str(tmp_path))
    assert missing.returncode == 1


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_serve_honours_config_file_and_flags(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.ini"
    config.write_text(
        f"[Server]\nhost = 127.0.0.1\nport = {port}\n[Database]\ndatabase_name = x.db\n"
    )
    argv = [
        sys.executable,
        "-m",
        "rentahal",
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path),
    ]
    async with ServerProcess(argv, f"http://127.0.0.1:{port}/readyz", startup_timeout=30):
        assert (tmp_path / "x.db").exists()
        assert (tmp_path / "secrets" / "secret_key").stat().st_mode & 0o077 == 0


def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[Claude]\napi_key = sk-ant-secret\n")
    result = cli("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "RENTAHAL_CLAUDE_API_KEY" in result.stderr
    assert "sk-ant-secret" not in result.stderr + result.stdout


async def test_a_worker_token_from_the_cli_lets_a_worker_join(tmp_path: Path) -> None:
    key = run_cli("admin", "create-sysop", "captain", data_dir=tmp_path).strip().splitlines()[-1]
    missing = cli("admin", "worker-token", "nobody", "--data-dir", str(tmp_path))
    assert missing.returncode == 1 and "no user" in missing.stderr
    token = run_cli("admin", "worker-token", "captain", data_dir=tmp_path).strip().splitlines()[-1]
    assert token.startswith("rah_") and token != key
    async with BrokerProcess(tmp_path) as broker, httpx.AsyncClient() as client:
        body = {"name": "rig", "role": "chat", "key": "k" * 20, "address": "http://127.0.0.1:9"}
        joined = await client.post(
            f"{broker.url}/api/v1/workers/register",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert joined.status_code == 201, joined.text
        # The token joins workers and does nothing else.
        me = await client.get(
            f"{broker.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.status_code == 200 and me.json()["nickname"] == "captain"
        listed = await client.get(
            f"{broker.url}/api/v1/workers", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status_code == 403
        audit = await client.get(
            f"{broker.url}/api/v1/audit", headers={"Authorization": f"Bearer {key}"}
        )
        assert "issue_worker_token" in [entry["action"] for entry in audit.json()]


def test_serve_imports_no_bench_or_worker_code() -> None:
    """`bench` and `worker` are loaded when they run, not with every broker start; their
    one-line help in `rentahal --help` is the one their own command has."""
    probe = (
        "import sys, rentahal.cli as c;"
        "from rentahal.api.app import create_app;"
        "print(sorted(m for m in sys.modules if m.startswith(('rentahal.bench', 'rentahal.worker."
        "cli', 'rentahal.worker.node', 'torch', 'transformers', 'faster_whisper', 'piper'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout

    from typer.main import get_command

    from rentahal.cli import _LazyCommands, app

    group = get_command(app)
    assert isinstance(group, _LazyCommands)
    for name, (_, _, summary) in _LazyCommands.LAZY.items():
        command = group.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None and command.help is not None
        assert command.help.splitlines()[0] == summary
    listing = cli("--help")
    assert listing.returncode == 0 and "bench" in listing.stdout and "worker" in listing.stdout


async def test_serve_logs_each_request_only_when_asked(tmp_path: Path) -> None:
    """The access log costs a line per request: off unless `access_log` is set."""
    request = "GET /healthz?asked-for=access-log"
    async with BrokerProcess(tmp_path / "on", env={"RENTAHAL_ACCESS_LOG": "true"}) as broker:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{broker.url}/healthz?asked-for=access-log")).is_success

        async def logged() -> bool:
            return request in broker.output

        await eventually(logged)
    async with BrokerProcess(tmp_path / "off") as broker, httpx.AsyncClient() as client:
        assert (await client.get(f"{broker.url}/healthz?asked-for=access-log")).is_success
    assert "/healthz" not in broker.output  # read once the broker has ended: all of it
