"""RENT A HAL: a self-hosted, multi-user AI orchestration broker."""

__version__ = "0.1.0"
