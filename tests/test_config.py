"""Settings: the seed's defaults, config files (INI and TOML), environment, secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import structlog

from rentahal.config import ConfigFileError, load_settings
from rentahal.logging import configure_logging


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RENTAHAL_"):
            monkeypatch.delenv(name)


def test_seed_defaults(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert settings.max_message_size == 1_048_576
    assert settings.health_check_interval == 60
    assert (settings.base_cost_per_query, settings.cost_per_second) == (0.01, 0.001)
    assert (settings.max_queue_size, settings.queue_timeout) == (100, 300)
    assert settings.token_expiration == 3600
    assert (settings.idle_watt_rate, settings.premium_watt_rate) == (500, 1000)
    assert settings.electricity_cost_per_kwh == 0.25
    assert settings.no_blacklist_imagine is True
    assert settings.resolved_database_url == (
        f"sqlite+aiosqlite:///{(tmp_path / 'llm_broker.db').resolve()}"
    )


def test_seed_ini_file(tmp_path: Path) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(
        "[Server]\nport = 5050\n[Costs]\ncost_per_second = 0.002\n"
        "[Workers]\nNO_BLACKLIST_IMAGINE = 0\nhealth_check_interval = 5\n"
        "[HuggingFace]\ndefault_models = gpt2, distilgpt2\n[Claude]\nmodel_name = claude-x\n"
    )
    settings = load_settings(config_file=ini, data_dir=tmp_path)
    assert settings.port == 5050
    assert settings.cost_per_second == 0.002
    assert settings.no_blacklist_imagine is False
    assert settings.health_check_interval == 5
    assert settings.huggingface_default_models == ["gpt2", "distilgpt2"]
    assert settings.claude_model_name == "claude-x"


def test_toml_file_environment_and_flags_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "rentahal.toml"
    toml.write_text("[Server]\nport = 6000\nhost = '127.0.0.1'\n[Queue]\nmax_queue_size = 7\n")
    monkeypatch.setenv("RENTAHAL_CONFIG_FILE", str(toml))
    monkeypatch.setenv("RENTAHAL_MAX_QUEUE_SIZE", "9")
    settings = load_settings(port=7000, data_dir=tmp_path)
    assert settings.host == "127.0.0.1"  # from the file
    assert settings.max_queue_size == 9  # the environment beats the file
    assert settings.port == 7000  # a flag beats both


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[Claude]\napi_key = sk-ant-123\n", "holds secrets (claude_api_key)"),
        ("[Security]\nsecret_key = hunter2\n", "holds secrets (secret_key)"),
        ("[Server]\nprot = 5000\n", "unknown setting [Server] prot"),
        ("[Server\nport = 1\n", "config.ini"),
    ],
)
def test_bad_config_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.ini"
    path.write_text(content)
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        load_settings(config_file=path, data_dir=tmp_path)


def test_secrets_from_environment_and_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "claude_api_key").write_text("sk-ant-from-file")
    monkeypatch.setenv("RENTAHAL_HUGGINGFACE_API_KEY", "hf_from_env")
    settings = load_settings(data_dir=tmp_path)
    assert settings.claude_api_key is not None
    assert settings.claude_api_key.get_secret_value() == "sk-ant-from-file"
    assert settings.huggingface_api_key is not None
    assert settings.huggingface_api_key.get_secret_value() == "hf_from_env"
    assert "sk-ant-from-file" not in repr(settings)


def test_logs_never_carry_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENTAHAL_CLAUDE_API_KEY", "sk-ant-very-secret-value")
    settings = load_settings(data_dir=tmp_path, log_json=True)
    stream = io.StringIO()
    configure_logging(settings)
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    structlog.get_logger("test").info(
        "calling worker",
        note="key is sk-ant-very-secret-value",
        api_key="rah_abcdef0123456789",
        headers={"Authorization": "Bearer rah_zzz"},
    )
    logging.getLogger("uvicorn").warning("stdlib line with sk-ant-very-secret-value")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5",
        "GET",
        "/api/v1/gmail/callback?code=4/0Adeu5BW-secret&state=st4te-secret&x=1",
        "1.1",
        200,
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "sk-ant-very-secret-value" not in text
    assert "rah_abcdef0123456789" not in text and "rah_zzz" not in text
    assert lines[0]["note"] == "key is [redacted]"
    assert lines[0]["api_key"] == "[redacted]"
    assert lines[0]["headers"] == {"Authorization": "[redacted]"}
    assert lines[1]["event"] == "stdlib line with [redacted]"
    # An OAuth callback's single-use code and state are credentials too.
    assert "code=[redacted]&state=[redacted]&x=1" in lines[2]["event"]
    assert "secret" not in lines[2]["event"]
    structlog.reset_defaults()
