"""Reads the config file (TOML, or the seed's `config.ini`) as a pydantic-settings source.

Sections are flattened: `[Costs] base_cost_per_query` becomes `base_cost_per_query`. Where a
key only makes sense with its section (`[Claude] api_key`), the section is the prefix
(`claude_api_key`). Unknown keys are an error, so a typo never silently keeps a default.
"""

from __future__ import annotations

import configparser
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class ConfigFileError(ValueError):
    """The config file cannot be read or holds what it may not hold."""


def _flatten(sections: dict[str, Any], field_names: set[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in sections.items():
        if not isinstance(body, dict):
            flat[section.lower()] = body  # top-level key without a section
            continue
        for key, value in body.items():
            key = key.lower()
            prefixed = f"{section.lower()}_{key}"
            if prefixed in field_names:
                flat[prefixed] = value
            elif key in field_names:
                flat[key] = value
            else:
                raise ConfigFileError(f"unknown setting [{section}] {key}")
    return flat


def read_config_file(path: Path, field_names: set[str]) -> dict[str, Any]:
    """Parse `path` (TOML if it ends in .toml, else INI) into flat setting values."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from exc
    if path.suffix.lower() == ".toml":
        try:
            sections: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{path}: {exc}") from exc
    else:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise ConfigFileError(f"{path}: {exc}") from exc
        sections = {name: dict(parser[name]) for name in parser.sections()}
    return _flatten(sections, field_names)


class ConfigFileSource(PydanticBaseSettingsSource):
    """Settings source for the file named by `config_file` (flag, or `RENTAHAL_CONFIG_FILE`)."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._path = self._locate(init_settings(), env_settings())

    @staticmethod
    def _locate(init_values: dict[str, Any], env_values: dict[str, Any]) -> Path | None:
        raw = (
            init_values.get("config_file")
            or env_values.get("config_file")
            or os.environ.get("RENTAHAL_CONFIG_FILE")
        )
        return Path(raw) if raw else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings requires the method

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        fields = self.settings_cls.model_fields
        values = read_config_file(self._path, set(fields))
        secrets = sorted(name for name in values if "SecretStr" in str(fields[name].annotation))
        if secrets:
            raise ConfigFileError(
                f"{self._path} holds secrets ({', '.join(secrets)}): set them in the environment "
                f"(RENTAHAL_{secrets[0].upper()}) or as files in the secrets directory instead"
            )
        return values
