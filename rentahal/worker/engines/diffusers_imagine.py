"""Text to image with a Hugging Face `diffusers` pipeline on the CPU, in float32.

Any pipeline directory that `AutoPipelineForText2Image` reads (Stable Diffusion 1.x/2.x,
SDXL, …). No registry package ships such weights, so `--model DIR` is required, and the
directory is read with `local_files_only`. Many copies of Stable Diffusion have had their
`safety_checker` folder deleted to save space while `model_index.json` still names it; such
a directory loads without the checker instead of failing. A present checker is kept.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import secrets
import threading
from typing import Any

from pydantic import BaseModel

from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.engines.transformers_chat import model_dir, torch_available, use_threads
from rentahal.worker.protocol import ImagineRequest, ImagineResponse


class DiffusersEngine(Engine):
    role = "imagine"
    name = "diffusers"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return options.model is not None and torch_available("diffusers")

    def load(self) -> None:
        path = model_dir(self.options)
        index = path / "model_index.json"
        if not index.is_file():
            raise EngineUnavailable(f"{path} is not a diffusers pipeline (no model_index.json)")
        import torch
        from diffusers import AutoPipelineForText2Image

        use_threads(self.options.threads)
        overrides: dict[str, Any] = {}
        if (
            "safety_checker" in json.loads(index.read_text())
            and not (path / "safety_checker").is_dir()
        ):
            overrides = {"safety_checker": None, "requires_safety_checker": False}
        self._pipeline = AutoPipelineForText2Image.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, **overrides
        )
        self._pipeline.set_progress_bar_config(disable=True)
        self._takes_negative = "negative_prompt" in inspect.signature(self._pipeline).parameters
        self._model_name = path.name
        # One image at a time: the scheduler keeps each run's timesteps on the pipeline, and
        # torch already spreads one run over every core.
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        return [self._model_name]

    def run(self, request: BaseModel) -> BaseModel:
        import torch

        assert isinstance(request, ImagineRequest)
        kwargs: dict[str, Any] = {}
        if request.negative_prompt:
            if not self._takes_negative:
                raise BadInput("unsupported", "this model takes no negative prompt")
            kwargs["negative_prompt"] = request.negative_prompt
        seed = request.seed if request.seed >= 0 else secrets.randbelow(2**32)
        with self._lock:
            image = self._pipeline(
                prompt=request.prompt,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                width=request.width,
                height=request.height,
                generator=torch.Generator("cpu").manual_seed(seed),
                **kwargs,
            ).images[0]
        png = io.BytesIO()
        image.save(png, format="PNG")
        return ImagineResponse(
            image_base64=base64.b64encode(png.getvalue()).decode("ascii"),
            width=image.width,
            height=image.height,
            seed=seed,
        )
