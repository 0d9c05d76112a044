"""Spoken clips that are the same on every run, for tests and benchmarks that listen to them.

Piper (like Bark) varies each reading at random by default, which a person hears as natural
and a test hears as a coin toss: Whisper tiny writes one draw of "What colour is the sky?" as
"what color is this guy". With the variation off, a phrase is the same WAV on every run, so a
test that passes once passes on every run on the same machine.
"""

from __future__ import annotations

from typing import Any

# The TTS worker's own options (`TtsRequest`): piper's noise scales, Bark's temperatures.
STEADY_VOICE: dict[str, float] = {"text_temp": 0.0, "waveform_temp": 0.0}


def steady_speech(text: str, **options: Any) -> dict[str, Any]:
    """The bus message asking the realm's TTS worker for `text`, read the steady way; it is
    answered by `speech_result` like `text_to_speech`."""
    return {
        "type": "submit_query",
        "query": {"query_type": "tts", "prompt": text, "options": STEADY_VOICE | options},
    }
