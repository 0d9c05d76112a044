"""`rentahal bench speech` with the real engines installed here: one timed pass, as a user
runs it, checked for a complete and sane report (the figures themselves are not judged)."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rentahal.bench.cli import speech_tables
from rentahal.bench.speech import SENTENCES, SpeechParams, run_speech
from rentahal.cli import app
from rentahal.worker.engines import ENGINES, EngineOptions, engine_class

pytestmark = pytest.mark.offline_models


def installed(role: str) -> list[str]:
    return [
        name for name, _ in ENGINES[role] if engine_class(role, name).available(EngineOptions())
    ]


def assert_timing(timing: dict[str, Any], samples: int) -> None:
    assert timing["samples"] == samples
    for spread in (timing["seconds"], timing["rtf"]):
        assert 0 < spread["p50"] <= spread["p90"] < math.inf


async def test_one_pass_reports_every_installed_engine_side_by_side() -> None:
    tts_names, stt_names = installed("tts"), installed("stt")
    # This machine has them (the worker extras and espeak-ng are part of its setup).
    assert "piper" in tts_names and "faster-whisper" in stt_names

    # The entry point `rentahal bench speech --repeat 1 --json` runs, in this process
    # rather than a child so the test spends its time on the engines, not on imports.
    measured = await run_speech(SpeechParams(repeat=1))
    text = json.dumps(measured.as_dict(), allow_nan=False)  # strict JSON: no NaN figures
    Console(file=io.StringIO(), width=100).print(speech_tables(measured))  # renders
    report = json.loads(text)

    assert report["repeat"] == 1 and report["sentences"] == list(SENTENCES)
    assert [t["engine"] for t in report["tts"]] == tts_names
    assert [s["engine"] for s in report["stt"]] == stt_names
    sentences = len(SENTENCES)
    for tts in report["tts"]:
        assert tts["model"] and tts["load_seconds"] >= 0
        assert_timing(tts["in_process"], sentences)
        assert_timing(tts["through_worker"], sentences)
        assert 0.5 < tts["audio_seconds"]["p50"] <= tts["audio_seconds"]["p90"] < 10
        assert tts["worker_overhead"] > 0
    for stt in report["stt"]:
        clips = sentences * len(tts_names)
        assert stt["model"] and stt["load_seconds"] > 0
        assert_timing(stt["in_process"], clips)
        assert_timing(stt["through_worker"], clips)
        assert stt["worker_overhead"] > 0
        engine_in_worker = stt["through_worker"]["engine_seconds"]
        assert 0 < engine_in_worker["p50"] <= stt["through_worker"]["seconds"]["p50"]
        assert stt["clips"] == dict.fromkeys(tts_names, sentences)
        assert set(stt["accuracy"]) == set(tts_names)
        assert all(0 <= fraction <= 1 for fraction in stt["accuracy"].values())
        misses = sum(sentences - matched for matched in stt["matched"].values())
        assert len(stt["misses"]) == misses
    whisper = report["stt"][stt_names.index("faster-whisper")]
    # piper's voice varies a little per request and whisper tiny.en misses about one clip in
    # sixteen: half the sentences exact is a bound that only a real fault breaks.
    assert whisper["accuracy"]["piper"] >= 0.5, whisper["misses"]


def test_without_an_stt_engine_it_says_so_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "stt", [])

    result = CliRunner().invoke(app, ["bench", "speech", "--repeat", "1"])

    assert result.exit_code == 1
    assert "no STT engine can run here" in result.stderr
