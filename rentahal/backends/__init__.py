"""Backend adapters, one per worker protocol (SPEC §5.1), looked up by a worker's `kind`.

Each adapter module is imported when a worker of its kind first needs it, so the broker
does not pay for SDKs (openai, anthropic, huggingface_hub) it never uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from rentahal.backends.base import Backend, BackendError, BackendRequest, Endpoint, HealthReport

# kind → "module:Class" under rentahal.backends
ADAPTERS: dict[str, str] = {
    "rentahal": "rentahal_worker:RentahalBackend",
    "ollama": "ollama:OllamaBackend",
    "openai": "openai_compat:OpenAIBackend",
    "a1111": "a1111:A1111Backend",
    "claude": "claude:ClaudeBackend",
    "huggingface": "huggingface:HuggingFaceBackend",
    "federation": "federation:FederationBackend",
}


class _Backends(Mapping[str, Backend]):
    """One shared adapter instance per kind, made on first use."""

    def __init__(self) -> None:
        self._made: dict[str, Backend] = {}

    def __getitem__(self, kind: str) -> Backend:
        backend = self._made.get(kind)
        if backend is None:
            module, cls = ADAPTERS[kind].split(":")
            backend = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
            self._made[kind] = backend
        return backend

    def __contains__(self, kind: object) -> bool:
        return kind in ADAPTERS

    def __iter__(self) -> Iterator[str]:
        return iter(ADAPTERS)

    def __len__(self) -> int:
        return len(ADAPTERS)


BACKENDS: Mapping[str, Backend] = _Backends()

__all__ = [
    "ADAPTERS",
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendRequest",
    "Endpoint",
    "HealthReport",
]
