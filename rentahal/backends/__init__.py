"""Backend adapters, one per worker protocol (SPEC §5.1), looked up by a worker's `kind`."""

from __future__ import annotations

from rentahal.backends.base import Backend, BackendError, BackendRequest, HealthReport
from rentahal.backends.ollama import OllamaBackend
from rentahal.backends.openai_compat import OpenAIBackend
from rentahal.backends.rentahal_worker import RentahalBackend

BACKENDS: dict[str, Backend] = {
    backend.kind: backend for backend in (RentahalBackend(), OllamaBackend(), OpenAIBackend())
}

__all__ = ["BACKENDS", "Backend", "BackendError", "BackendRequest", "HealthReport"]
