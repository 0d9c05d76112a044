"""Audio in any container a browser or a TTS engine makes (WAV, webm/opus, ogg, mp3),
decoded by PyAV to what speech models eat: 16 kHz mono float32."""

from __future__ import annotations

import io
import wave

import numpy as np

from rentahal.worker.engines.base import BadInput

SPEECH_RATE = 16_000
MAX_SECONDS = 30 * 60


def decode_speech(raw: bytes) -> np.ndarray:
    """Samples at 16 kHz mono; `BadInput` when the bytes are not audio PyAV can read."""
    import av  # PyAV comes with faster-whisper

    chunks: list[np.ndarray] = []
    samples = 0
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.audio:
                raise BadInput("bad_audio", "the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEECH_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    samples += chunk.size
                    if samples > MAX_SECONDS * SPEECH_RATE:
                        raise BadInput("audio_too_long", f"audio over {MAX_SECONDS} s")
                    chunks.append(chunk)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise BadInput("bad_audio", f"not audio that can be decoded: {exc}") from None
    if not chunks:
        raise BadInput("bad_audio", "the audio holds no samples")
    return np.concatenate(chunks).astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV from float samples in [-1, 1] or int16 samples."""
    if samples.dtype != np.int16:
        samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()
