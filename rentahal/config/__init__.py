"""Configuration: the seed's keys and defaults, a config file and `RENTAHAL_*` variables."""

from rentahal.config.file_source import ConfigFileError
from rentahal.config.settings import Settings, load_settings, secret_field_names

__all__ = ["ConfigFileError", "Settings", "load_settings", "secret_field_names"]
