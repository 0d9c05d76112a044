"""Vision without a vision-language model: read the text in an image with RapidOCR.

No registry ships captioning weights, but `rapidocr-onnxruntime` ships its OCR models, so an
offline machine can still answer "what does this say?". Answers say plainly that this
worker only reads text.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from pydantic import BaseModel

from rentahal.media.images import decode_image
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions
from rentahal.worker.protocol import ChatRequest, ChatResponse


class RapidOcrEngine(Engine):
    role = "vision"
    name = "rapidocr"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return importlib.util.find_spec("rapidocr_onnxruntime") is not None

    def load(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self._ocr = RapidOCR()

    @property
    def models(self) -> list[str]:
        return ["rapidocr"]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, ChatRequest)
        if request.image is None:
            raise BadInput("missing_image", "a vision request needs an image")
        image = decode_image(request.image)
        found, _ = self._ocr(np.asarray(image)[:, :, ::-1])  # RapidOCR wants BGR
        lines = [str(entry[1]).strip() for entry in found or [] if str(entry[1]).strip()]
        if not lines:
            return ChatResponse(
                response="I can only read text in images, and I found none in this one."
            )
        text = "\n".join(lines)
        return ChatResponse(response=f"I can only read text in images. This one says:\n{text}")
