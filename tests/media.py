"""Media the tests make at run time."""

from __future__ import annotations

import io
import wave


def make_wav(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    """A mono 16-bit WAV of a constant (near-silent) signal."""
    out = io.BytesIO()
    with wave.open(out, "wb") as recording:
        recording.setnchannels(1)
        recording.setsampwidth(2)
        recording.setframerate(rate)
        recording.writeframes(b"\x00\x10" * round(seconds * rate))
    return out.getvalue()
