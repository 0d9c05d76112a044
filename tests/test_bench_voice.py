"""`rentahal bench voice` against a broker with the real offline workers (whisper, SmolLM2,
piper): one short question, as a user runs it, checked for a complete report in which every
stage was timed (the figures themselves are the bench's business, not the test's)."""

from __future__ import annotations

import asyncio
import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rentahal.bench.cli import voice_tables
from rentahal.bench.voice import QUESTIONS, STAGES, VoiceParams, run_voice
from rentahal.cli import app

pytestmark = pytest.mark.offline_models


@pytest.mark.timeout(600)  # the offline workers load, then one warm-up and one timed turn
async def test_one_spoken_turn_is_timed_stage_by_stage(tmp_path: Path) -> None:
    # The entry point `rentahal bench voice --questions 1 --json`, in this process rather than
    # a child so the test spends its time on the workers, not on imports.
    measured = await run_voice(VoiceParams(questions=1, out=tmp_path))
    text = json.dumps(measured.as_dict(), allow_nan=False)  # strict JSON: every figure is set
    Console(file=io.StringIO(), width=120).print(voice_tables(measured))  # renders
    report = json.loads(text)

    assert report["questions"] == [QUESTIONS[0]] and report["repeat"] == 1
    (turn,) = report["turns"]
    assert turn["transcript"].strip() and turn["answer"].strip()
    assert 0.3 < turn["question_seconds"] < 10
    times = [turn[stage] for stage in STAGES]
    assert all(0 < t < math.inf for t in times), turn
    stt, first_text, first_sentence, first_audio, full_answer = times
    assert stt <= first_text <= first_sentence <= full_answer
    assert first_audio <= full_answer
    # Chunks (when the broker speaks while writing) come in order, all before the final result.
    chunks = turn["chunks"]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert [c["at"] for c in chunks] == sorted(c["at"] for c in chunks)
    assert all(c["at"] <= full_answer and c["seconds"] > 0 for c in chunks)
    assert turn["audio_streamed"] == bool(chunks)
    if chunks:
        assert first_audio == chunks[0]["at"]
    assert turn["spoken_seconds"] > 0 and turn["gaps"] >= 0
    for name in STAGES:
        spread = report["stages"][name]
        assert spread["p50"] == spread["p90"] == spread["max"] == turn[name]
    assert report["audio_streamed"] == int(turn["audio_streamed"])
    target = report["target"]
    assert target["p50_ratio"] == pytest.approx(first_audio / target["first_audio_p50"])
    assert target["worst_ratio"] == pytest.approx(first_audio / target["first_audio_worst"])
    png = Path(report["timeline"])
    assert png.parent == tmp_path
    assert (await asyncio.to_thread(png.read_bytes)).startswith(b"\x89PNG")


def test_url_without_an_api_key_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(app, ["bench", "voice", "--url", "http://127.0.0.1:1"])

    assert result.exit_code == 2
    assert "--url needs --api-key" in result.stderr
