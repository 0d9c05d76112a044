"""Secrets from files: `<secrets dir>/<setting name>` (e.g. `data/secrets/claude_api_key`),
the way container platforms mount them. Only secret settings are read this way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

MAX_SECRET_BYTES = 64 * 1024


def is_secret_field(field: FieldInfo) -> bool:
    return "SecretStr" in str(field.annotation)


class SecretFilesSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], secrets_dir: Path | None) -> None:
        super().__init__(settings_cls)
        self._dir = secrets_dir

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings requires the method

    def __call__(self) -> dict[str, Any]:
        if self._dir is None or not self._dir.is_dir():
            return {}
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            path = self._dir / name
            if is_secret_field(field) and path.is_file():
                values[name] = path.read_bytes()[:MAX_SECRET_BYTES].decode().strip()
        return values
