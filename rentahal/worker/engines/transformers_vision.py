"""Vision with a Hugging Face image-text-to-text model on the CPU, through `transformers`.

`AutoModelForImageTextToText` reads both kinds of model directory in use: vision-language
models (LLaVA, SmolVLM, Qwen2-VL, BLIP…), whose processor takes the image and the prompt,
formatted by its chat template where it has one; and captioners (`VisionEncoderDecoder`,
such as ViT + GPT-2), which pair an image processor with a tokenizer and take no prompt. As
for chat, there is no offline default model and the directory is read with
`local_files_only`.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel

from rentahal.media.images import decode_image
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions
from rentahal.worker.engines.transformers_chat import (
    generate,
    model_dir,
    torch_available,
    use_threads,
)
from rentahal.worker.protocol import ChatRequest, ChatResponse


class TransformersVisionEngine(Engine):
    role = "vision"
    name = "transformers"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return options.model is not None and torch_available("transformers")

    def load(self) -> None:
        path = model_dir(self.options)
        import torch
        from transformers import (
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
            ProcessorMixin,
        )

        use_threads(self.options.threads)
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self._takes_prompt = isinstance(processor, ProcessorMixin)
        if self._takes_prompt:
            self._processor, self._tokenizer = processor, processor.tokenizer
        else:  # a captioner: AutoProcessor found only one of its two parts
            self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        ).eval()
        self._model_name = path.name
        self._lock = threading.Lock()  # one at a time, as in the chat engine

    @property
    def models(self) -> list[str]:
        return [self._model_name]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, ChatRequest)
        if request.image is None:
            raise BadInput("missing_image", "a vision request needs an image")
        image = decode_image(request.image)
        with self._lock:
            inputs = (
                self._processor(
                    images=image, text=self._prompt(request.prompt), return_tensors="pt"
                )
                if self._takes_prompt
                else self._processor(images=image, return_tensors="pt")
            )
            answer = generate(self._model, inputs, request.options)
            text: str = self._tokenizer.decode(answer, skip_special_tokens=True)
        return ChatResponse(response=text.strip())

    def _prompt(self, prompt: str) -> str:
        """The prompt in the model's chat format (which places the image), else as given."""
        if not getattr(self._processor, "chat_template", None):
            return prompt
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        return self._processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
