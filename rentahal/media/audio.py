"""Audio in any container a browser or a TTS engine makes (WAV, webm/opus, ogg, mp3),
decoded by PyAV to what speech models eat: 16 kHz mono.

The broker turns every recording into a 16 kHz mono WAV at submit, so any STT worker (the
seed's Whisper worker wrote its input to a `.wav` file) gets a format it reads, and audio
that is not audio is refused before it is queued."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np

from rentahal.media import BadMedia, decode_base64

SPEECH_RATE = 16_000
MAX_SECONDS = 30 * 60


def decode_speech(raw: bytes, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Samples at 16 kHz mono; `BadMedia` when the bytes are not audio PyAV can read."""
    import av  # imported on first use: the broker only needs it for speech

    chunks: list[np.ndarray] = []
    samples = 0
    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.audio:
                raise BadMedia("bad_audio", "the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEECH_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    samples += chunk.size
                    if samples > max_seconds * SPEECH_RATE:
                        raise BadMedia("audio_too_long", f"the audio is over {max_seconds:g} s")
                    chunks.append(chunk)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise BadMedia("bad_audio", f"not audio that can be decoded: {exc}") from None
    if not chunks:
        raise BadMedia("bad_audio", "the audio holds no samples")
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


def normalize_for_speech(data: str, max_seconds: float) -> str:
    """Base64 16 kHz mono WAV of a recording; blocking, run it in a thread."""
    samples = decode_speech(decode_base64(data, what="audio"), max_seconds)
    return base64.b64encode(wav_bytes(samples, SPEECH_RATE)).decode()
