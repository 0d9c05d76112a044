"""Cloud models from the configuration, as ordinary workers: Claude (`claude_api_key`,
`claude_model_name`, `claude_endpoint`) and Hugging Face (`huggingface_api_key`, the
models a sysop adds with `add_huggingface_model` plus `huggingface_default_models`, each
at `huggingface_endpoint/<model>`).

They are routed, health-checked and accounted like any worker. Their keys come from the
settings (environment or secret files) and live only in memory: after a restart a cloud
worker is not routed to until the broker has handed it its key again.
"""

from __future__ import annotations

import contextlib
import re

import structlog
from pydantic import SecretStr, ValidationError

from rentahal.admin.catalog import WorkerCatalog
from rentahal.config import Settings
from rentahal.core.specs import WorkerSpec
from rentahal.core.vocabulary import QueryType, WorkerKind
from rentahal.routing.registry import Registry
from rentahal.store.workers import AlreadyExists, ModelRepository

log = structlog.get_logger(__name__)

CLAUDE_WORKER = "claude"
HUGGINGFACE = "huggingface"  # the provider name in the models table


def huggingface_worker(model: str) -> str:
    """`hf-<model>`, made a valid worker name ("org/model" → "hf-org-model")."""
    return "hf-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")[:60]


class CloudWorkers:
    """Adds and removes its workers through the catalog, as the broker itself (no actor)."""

    def __init__(
        self,
        settings: Settings,
        models: ModelRepository,
        registry: Registry,
        catalog: WorkerCatalog,
    ) -> None:
        self._settings = settings
        self._models = models
        self._registry = registry
        self._catalog = catalog

    async def start(self) -> None:
        settings = self._settings
        await self._ensure(
            WorkerSpec(
                name=CLAUDE_WORKER,
                address=settings.claude_endpoint,
                kind=WorkerKind.CLAUDE,
                type=QueryType.CHAT,
                models=[settings.claude_model_name],
            ),
            settings.claude_api_key,
        )
        models = self._models
        if not await models.list(HUGGINGFACE):  # a new store: the seed's default models
            for name in settings.huggingface_default_models:
                # Brokers starting together on a new store may both seed them.
                with contextlib.suppress(AlreadyExists):
                    await models.add(HUGGINGFACE, name, "chat")
        for model in await models.list(HUGGINGFACE):
            try:
                spec = self.huggingface_spec(model.name, model.query_type)
            except ValidationError:  # stored before names were checked: never stop a start
                log.warning("cloud.unusable_model", model=model.name[:80])
                continue
            await self._ensure(spec, settings.huggingface_api_key)

    def huggingface_spec(self, model: str, query_type: str) -> WorkerSpec:
        """The worker serving a Hugging Face model; `ValidationError` if its id makes no
        usable URL."""
        settings = self._settings
        return WorkerSpec(
            name=huggingface_worker(model),
            address=f"{settings.huggingface_endpoint.rstrip('/')}/{model}",
            kind=WorkerKind.HUGGINGFACE,
            type=query_type,  # type: ignore[arg-type]
            models=[model],
        )

    async def add_huggingface(self, spec: WorkerSpec) -> None:
        await self._ensure(spec, self._settings.huggingface_api_key)

    async def remove_huggingface(self, model: str) -> None:
        if self._registry.get(name := huggingface_worker(model)) is not None:
            await self._catalog.remove_worker(None, name)

    async def _ensure(self, spec: WorkerSpec, key: SecretStr | None) -> None:
        """Give the worker its key; add it (or replace an outdated one); without a key,
        take it out of the realm."""
        existing = self._registry.get(spec.name)
        if existing is not None:
            same = (existing.address, existing.kind, existing.configured_models) == (
                spec.address,
                spec.kind,
                tuple(spec.models),
            ) and existing.capabilities == {spec.type}
            if key is not None and same and existing.joined:
                existing.key = key.get_secret_value()
                return
            if not existing.joined:
                log.warning("cloud.name_taken", worker=spec.name)  # a sysop's own worker
                return
            await self._catalog.remove_worker(None, spec.name)
        if key is not None:
            await self._catalog.add_worker(None, spec, key=key.get_secret_value())
