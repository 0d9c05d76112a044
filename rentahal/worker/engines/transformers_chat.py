"""Chat with a Hugging Face causal language model on the CPU, through PyTorch `transformers`.

For models that have no GGUF file: any directory `AutoModelForCausalLM` reads. No registry
package ships such weights, so there is no offline default and `--model DIR` is required.
Directories are read with `local_files_only`: a worker never fetches weights from a hub
behind its operator's back. The vision and diffusers engines share this module's helpers.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rentahal.backends.base import generation_options
from rentahal.worker.engines.base import BadInput, Engine, EngineOptions, EngineUnavailable
from rentahal.worker.protocol import ChatRequest, ChatResponse

DEFAULT_MAX_TOKENS = 256
MAX_NEW_TOKENS = 4096  # on a CPU, longer answers take many minutes: bound one request's cost


def torch_available(*libraries: str) -> bool:
    """Whether torch and `libraries` are installed, without importing them (seconds each)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", *libraries))


def model_dir(options: EngineOptions) -> Path:
    """The model directory of `options`; `EngineUnavailable` when there is none."""
    if options.model is None:
        raise EngineUnavailable("this engine has no default model: pass --model DIR")
    if not options.model.is_dir():
        raise EngineUnavailable(f"model directory {options.model} does not exist")
    return options.model


def use_threads(threads: int) -> None:
    """Torch's thread count is process-wide; 0 keeps its default (one per core)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def generate(model: Any, inputs: Any, options: dict[str, Any]) -> list[int]:
    """The token ids `model` adds to `inputs`, sampled as the request's options say:
    greedy at temperature 0, the model's own generation config where they are silent."""
    import torch

    picked = generation_options(options)
    budget = min(picked.get("max_tokens", DEFAULT_MAX_TOKENS), MAX_NEW_TOKENS)
    prompt: list[int] = inputs["input_ids"][0].tolist() if "input_ids" in inputs else []
    if prompt and not model.config.is_encoder_decoder:
        context = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", 0)
        if context:
            if len(prompt) >= context:
                raise BadInput(
                    "prompt_too_long",
                    f"the prompt is {len(prompt)} tokens; this model reads at most {context}",
                )
            budget = min(budget, context - len(prompt))
    kwargs: dict[str, Any] = {"max_new_tokens": budget}
    if picked.get("temperature") == 0:
        kwargs["do_sample"] = False
    elif "temperature" in picked or "top_p" in picked:
        kwargs["do_sample"] = True
        kwargs.update({key: picked[key] for key in ("temperature", "top_p") if key in picked})
    if "seed" in picked:
        torch.manual_seed(picked["seed"])  # process-wide: callers hold their engine's lock
    with torch.inference_mode():
        output: list[int] = model.generate(**inputs, **kwargs)[0].tolist()
    # Decoder-only models return the prompt too; encoder-decoders return only new tokens.
    return output[len(prompt) :] if output[: len(prompt)] == prompt else output


class TransformersChatEngine(Engine):
    role = "chat"
    name = "transformers"

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return options.model is not None and torch_available("transformers")

    def load(self) -> None:
        path = model_dir(self.options)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        use_threads(self.options.threads)
        self._tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # float32: checkpoints are often stored in half precision, which is slow on CPUs.
        self._model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        ).eval()
        self._model_name = path.name
        # One generation at a time: torch already spreads one over every core, the seed is
        # process-wide, and a fast tokenizer used from two threads fails ("Already borrowed").
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        return [self._model_name]

    def run(self, request: BaseModel) -> BaseModel:
        assert isinstance(request, ChatRequest)
        if request.image is not None:
            raise BadInput("unsupported", "this chat model does not read images")
        with self._lock:
            if self._tokenizer.chat_template:
                inputs = self._tokenizer.apply_chat_template(
                    [{"role": "user", "content": request.prompt}],
                    add_generation_prompt=True,
                    return_dict=True,
                    return_tensors="pt",
                )
            else:
                inputs = self._tokenizer(request.prompt, return_tensors="pt")
            answer = generate(self._model, inputs, request.options)
            text: str = self._tokenizer.decode(answer, skip_special_tokens=True)
        return ChatResponse(response=text.strip())
