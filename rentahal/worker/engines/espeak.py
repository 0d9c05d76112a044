"""Text to speech with espeak-ng (Debian): robotic but tiny and instant; the fallback voice.

It has a voice for each of the seed's six speaker presets, so every preset works offline.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import wave
from io import BytesIO

import numpy as np
from pydantic import BaseModel

from rentahal.media.audio import wav_bytes
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.protocol import TtsRequest, TtsResponse
from rentahal.worker.speakers import ESPEAK_PRESETS

WORDS_PER_MINUTE = 150


class EspeakEngine(Engine):
    role = "tts"
    name = "espeak-ng"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return shutil.which("espeak-ng") is not None

    def load(self) -> None:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise EngineUnavailable("espeak-ng is not installed (apt-get install espeak-ng)")
        self._binary = binary

    @property
    def models(self) -> list[str]:
        return ["espeak-ng"]

    @property
    def speakers(self) -> list[str]:
        return sorted(ESPEAK_PRESETS)

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, TtsRequest)
        speaker = request.speaker or "en_male_1"
        voice = ESPEAK_PRESETS.get(speaker)
        if voice is None:
            raise BadInput(
                "unknown_speaker",
                f"no speaker {speaker!r}; espeak-ng has: {', '.join(self.speakers)}",
            )
        # The text goes in on stdin, so nothing in it can be read as an option.
        done = subprocess.run(
            [self._binary, "-v", voice, "-s", str(WORDS_PER_MINUTE), "--stdout"],
            input=request.prompt.encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0 or not done.stdout:
            raise RuntimeError(f"espeak-ng failed: {done.stderr.decode(errors='replace')[:200]}")
        # Writing to a pipe, espeak-ng cannot go back to fill in the WAV sizes: re-wrap the
        # samples in a header that says how long they are.
        with wave.open(BytesIO(done.stdout)) as audio:
            sample_rate = audio.getframerate()
            samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16)
        return TtsResponse(
            audio_base64=base64.b64encode(wav_bytes(samples, sample_rate)).decode(),
            sample_rate=sample_rate,
        )
