"""The engines a worker can run, per role, in the order they are preferred.

Modules are imported only when chosen, so a machine needs only the libraries of the engine
it runs. `pick` takes the operator's choice, or the first engine that can run here.
"""

from __future__ import annotations

import importlib

from rentahal.worker.engines.base import (
    BadInput,
    Engine,
    EngineOptions,
    EngineUnavailable,
)

# role → [(engine name, "module:Class")], best first. Engines that need a model path
# (transformers, diffusers) come after the ones with an offline default.
ENGINES: dict[str, list[tuple[str, str]]] = {
    "stt": [("faster-whisper", "faster_whisper:FasterWhisperEngine")],
    # Bark needs a Bark model directory (never picked without one), then it comes first.
    "tts": [
        ("bark+fallback", "tiered_tts:TieredTtsEngine"),
        ("bark", "bark:BarkEngine"),
        ("piper", "piper:PiperEngine"),
        ("espeak-ng", "espeak:EspeakEngine"),
    ],
    "chat": [
        ("llama.cpp", "llamacpp:LlamaCppEngine"),
        ("transformers", "transformers_chat:TransformersChatEngine"),
        ("echo", "echo:EchoEngine"),
    ],
    "vision": [
        ("transformers", "transformers_vision:TransformersVisionEngine"),
        ("rapidocr", "rapidocr:RapidOcrEngine"),
    ],
    "imagine": [("diffusers", "diffusers_imagine:DiffusersEngine")],
}
EXPLICIT_ONLY = {"echo"}  # never picked unless named


def engine_class(role: str, name: str) -> type[Engine]:
    for engine_name, target in ENGINES.get(role, []):
        if engine_name == name:
            module, cls = target.split(":")
            found: type[Engine] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
            return found
    known = ", ".join(n for n, _ in ENGINES.get(role, [])) or "none"
    raise EngineUnavailable(f"no {role} engine {name!r} (known: {known})")


def pick(role: str, name: str | None, options: EngineOptions) -> Engine:
    """The named engine, or the first that can run here; `EngineUnavailable` otherwise."""
    if role not in ENGINES:
        raise EngineUnavailable(f"no engines for role {role!r}")
    if name is not None:
        cls = engine_class(role, name)
        if not cls.available(options):
            raise EngineUnavailable(
                f"the {role} engine {name} cannot run here: its library or model is missing"
            )
        return cls(options)
    for engine_name, _ in ENGINES[role]:
        if engine_name in EXPLICIT_ONLY:
            continue
        cls = engine_class(role, engine_name)
        if cls.available(options):
            return cls(options)
    raise EngineUnavailable(
        f"no {role} engine can run here; install one of: "
        + ", ".join(n for n, _ in ENGINES[role] if n not in EXPLICIT_ONLY)
    )


__all__ = ["ENGINES", "BadInput", "Engine", "EngineOptions", "EngineUnavailable", "pick"]
