"""Which intents this broker offers: every class registered in the entry-point group
`rentahal.intents`, the built-ins (declared in RENT A HAL's own pyproject.toml) and those of
any package installed beside it.

A plugin that fails to load, is not an `Intent`, or reuses a taken name is logged and left
out; the broker starts without it rather than not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points

import structlog

from rentahal.intents.base import Intent

log = structlog.get_logger(__name__)

GROUP = "rentahal.intents"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OWN_DISTRIBUTION = "rentahal"


class IntentRegistry:
    def __init__(self, intents: Iterable[Intent]) -> None:
        self._by_name: dict[str, Intent] = {}
        for intent in intents:
            self._by_name.setdefault(intent.name, intent)

    @classmethod
    def discover(cls) -> IntentRegistry:
        """The intents of every installed package; RENT A HAL's own first, so a plugin
        cannot take a built-in's name."""
        found = sorted(entry_points(group=GROUP), key=_load_order)
        intents: list[Intent] = []
        names: set[str] = set()
        for entry_point in found:
            intent = _load(entry_point)
            if intent is None:
                continue
            if intent.name in names:
                log.warning(
                    "intent.duplicate_name", intent=intent.name, entry_point=entry_point.value
                )
                continue
            names.add(intent.name)
            intents.append(intent)
        return cls(intents)

    def __iter__(self) -> Iterator[Intent]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Intent | None:
        return self._by_name.get(name)


def _load_order(entry_point: EntryPoint) -> tuple[bool, str]:
    distribution = entry_point.dist.name if entry_point.dist is not None else ""
    return (distribution != OWN_DISTRIBUTION, entry_point.name)


def _load(entry_point: EntryPoint) -> Intent | None:
    try:
        loaded = entry_point.load()
    except Exception:
        log.exception("intent.load_failed", entry_point=entry_point.value)
        return None
    if not (isinstance(loaded, type) and issubclass(loaded, Intent)):
        log.warning("intent.not_an_intent", entry_point=entry_point.value)
        return None
    name = getattr(loaded, "name", None)
    if not isinstance(name, str) or not NAME.match(name):
        log.warning("intent.bad_name", entry_point=entry_point.value, name=repr(name))
        return None
    try:
        return loaded()
    except Exception:
        log.exception("intent.init_failed", entry_point=entry_point.value)
        return None
