"""Text to speech with Suno's Bark through PyTorch `transformers`: expressive but slow on a CPU.

The seed's Bark worker, offline: `--model DIR` is a Bark model directory as the hub publishes
it (`suno/bark` or `suno/bark-small`: config.json with model_type "bark", the weights, the
BERT tokenizer and, for voices, `speaker_embeddings_path.json` with its `speaker_embeddings/`
arrays). The seed chose bark-small with `USE_SMALL_MODELS`; here the operator chooses by the
directory. No registry package ships Bark weights, so there is no offline default, and the
directory is read with `local_files_only`.

Speakers: the seed's six presets (`speakers.BARK_PRESETS`, e.g. en_male_1 → v2/en_speaker_6)
and Bark's own voice ids, but only those whose speaker embeddings are in the directory: a
request never names a file, and a voice that is not here is refused, not silently replaced by a
random one. No speaker: Bark picks a voice of its own for each request, as the seed did.

Sampling follows the seed (Suno's `generate_audio`): `text_temp` is the semantic model's
temperature, `waveform_temp` the coarse acoustic model's, and the fine model samples at 0.5;
a temperature of 0 means greedy decoding for that stage.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from rentahal.media.audio import wav_bytes
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.engines.transformers_chat import model_dir, torch_available, use_threads
from rentahal.worker.protocol import TtsRequest, TtsResponse
from rentahal.worker.speakers import BARK_PRESETS

# Bark's own default length: 768 semantic tokens at 49.9 Hz, about 15 s of speech. Bark rambles
# past the end of its text, so a model directory cannot ask for more than this.
MAX_SEMANTIC_TOKENS = 768
FINE_TEMPERATURE = 0.5  # Suno's generate_audio samples the fine codebooks at 0.5, always
MIN_EOS_P = 0.2  # Suno's end-of-speech threshold: stop once "end" is at least this likely
SPEAKER_EMBEDDINGS = "speaker_embeddings_path.json"
PROMPT_SHAPES = {"semantic_prompt": 1, "coarse_prompt": 2, "fine_prompt": 2}  # array ranks


def is_bark_dir(path: Path | None) -> bool:
    """Whether `path` is a directory holding a Bark model (not a piper voice or another model)."""
    if path is None or not path.is_dir():
        return False
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "bark"


def local_voices(root: Path, embeddings: dict[str, Any] | None) -> dict[str, dict[str, np.ndarray]]:
    """The voice presets of `speaker_embeddings_path.json` whose arrays are all in `root`."""
    voices: dict[str, dict[str, np.ndarray]] = {}
    for voice, files in (embeddings or {}).items():
        if voice == "repo_or_path" or not isinstance(files, dict):
            continue
        arrays: dict[str, np.ndarray] = {}
        for key, rank in PROMPT_SHAPES.items():
            relative = files.get(key)
            # Lexical containment only: hub snapshots are symlinks into a blobs/ directory.
            if not isinstance(relative, str) or os.path.isabs(relative):
                break
            if os.path.normpath(relative).split(os.sep)[0] == os.pardir:
                break
            path = root / relative
            if not path.is_file():
                break
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                break
            if array.ndim != rank or not np.issubdtype(array.dtype, np.integer):
                break
            arrays[key] = array
        else:
            voices[voice] = arrays
    return voices


class BarkEngine(Engine):
    role = "tts"
    name = "bark"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        # A Bark directory, not merely a path: with a piper voice as --model, piper is picked.
        return is_bark_dir(options.model) and torch_available("transformers")

    def load(self) -> None:
        path = model_dir(self.options)
        if not is_bark_dir(path):
            raise EngineUnavailable(f"{path} is not a Bark model (config.json model_type 'bark')")
        import torch
        from transformers import BarkModel, BarkProcessor

        use_threads(self.options.threads)
        self._processor: Any = BarkProcessor.from_pretrained(
            path,
            local_files_only=True,
            # Without the file there are simply no voices; don't let transformers warn.
            speaker_embeddings_dict_path=(
                SPEAKER_EMBEDDINGS if (path / SPEAKER_EMBEDDINGS).is_file() else None
            ),
        )
        self._model: Any = BarkModel.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        ).eval()
        generation = self._model.generation_config
        self.sample_rate = int(getattr(generation, "sample_rate", 24_000))
        semantic = dict(getattr(generation, "semantic_config", None) or {})
        self._max_semantic_tokens = min(
            int(semantic.get("max_new_tokens") or MAX_SEMANTIC_TOKENS), MAX_SEMANTIC_TOKENS
        )
        self._min_eos_p = semantic.get("min_eos_p") or MIN_EOS_P
        self._voices = local_voices(path, self._processor.speaker_embeddings)
        self._speakers: dict[str, str] = {
            preset: voice for preset, voice in BARK_PRESETS.items() if voice in self._voices
        }
        self._speakers.update({voice: voice for voice in self._voices})
        self._model_name = path.name
        # One generation at a time: torch already spreads one over every core, sampling
        # draws from the process-wide generator, and a fast tokenizer is not thread-safe.
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        return [self._model_name]

    @property
    def speakers(self) -> list[str]:
        return sorted(self._speakers)

    def voice(self, speaker: str | None) -> dict[str, np.ndarray] | None:
        """The speaker embeddings for `speaker`; `BadInput` for a voice this directory lacks."""
        if speaker is None:
            return None
        voice = self._speakers.get(speaker)
        if voice is not None:
            return self._voices[voice]
        if not self._speakers:
            known = "none (the model directory has no speaker_embeddings): send no speaker"
        else:
            known = ", ".join(self.speakers)
        missing = ""
        if speaker in BARK_PRESETS:
            missing = f" (its Bark voice {BARK_PRESETS[speaker]} is not in the model directory)"
        raise BadInput(
            "unknown_speaker", f"no speaker {speaker!r}{missing}; Bark here has: {known}"
        )

    def sampling(self, request: TtsRequest) -> dict[str, Any]:
        """`BarkModel.generate` keywords: a `semantic_`/`coarse_`/`fine_` prefix targets one
        sub-model; a temperature of 0 is greedy decoding for its stage."""
        kwargs: dict[str, Any] = {
            "semantic_max_new_tokens": self._max_semantic_tokens,
            "semantic_min_new_tokens": 1,  # at least one frame, so there is audio to decode
            "min_eos_p": self._min_eos_p,
        }
        for stage, temperature in (
            ("semantic", request.text_temp),
            ("coarse", request.waveform_temp),
        ):
            kwargs[f"{stage}_do_sample"] = temperature > 0
            if temperature > 0:
                kwargs[f"{stage}_temperature"] = temperature
        # The fine model samples unless its temperature is None (argmax); 0 would divide by 0.
        kwargs["fine_temperature"] = FINE_TEMPERATURE if request.waveform_temp > 0 else None
        return kwargs

    def run(self, request: BaseModel) -> BaseModel:
        import torch

        assert isinstance(request, TtsRequest)
        voice = self.voice(request.speaker)
        with self._lock:
            inputs = self._processor(
                request.prompt, voice_preset=None if voice is None else dict(voice)
            )
            with torch.inference_mode():
                audio = self._model.generate(**inputs, **self.sampling(request))
        samples = audio[0].float().numpy()
        if samples.size == 0:
            raise BadInput("nothing_to_say", "the text has nothing to speak")
        return TtsResponse(
            audio_base64=base64.b64encode(wav_bytes(samples, self.sample_rate)).decode(),
            sample_rate=self.sample_rate,
        )
