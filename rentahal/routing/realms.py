"""Realms: one installation partitioned by kind of work, and the routing table
`query_type → primary realm, backup realms` (SPEC §12)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rentahal.store.models import Realm

# (name, primary for) — the default realms; every query type has a primary realm.
DEFAULT_REALMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("$CHAT", ("chat",)),
    ("$VISION", ("vision",)),
    ("$IMAGINE", ("imagine",)),
    ("$SPEECH", ("speech", "stt", "tts")),
)


@dataclass(slots=True)
class RealmState:
    name: str
    primary_for: tuple[str, ...]
    backup_for: tuple[str, ...]
    strategy: str
    max_queue_size: int
    min_workers: int
    max_workers: int

    @classmethod
    def from_row(cls, row: Realm) -> RealmState:
        return cls(
            name=row.name,
            primary_for=tuple(row.primary_for),
            backup_for=tuple(row.backup_for),
            strategy=row.strategy,
            max_queue_size=row.max_queue_size,
            min_workers=row.min_workers,
            max_workers=row.max_workers,
        )


class RealmTable:
    """The realms and the routing table derived from them (computed once per change: the
    router asks on every dispatch)."""

    def __init__(self) -> None:
        self._realms: dict[str, RealmState] = {}
        self._routes: dict[str, list[RealmState]] = {}

    def load(self, rows: Iterable[Realm]) -> None:
        realms = sorted((RealmState.from_row(row) for row in rows), key=lambda r: r.name)
        self._realms = {realm.name: realm for realm in realms}
        self._routes = {}
        for query_type in {t for r in realms for t in (*r.primary_for, *r.backup_for)}:
            primary = [r for r in realms if query_type in r.primary_for][:1]
            backups = [r for r in realms if query_type in r.backup_for and r not in primary]
            self._routes[query_type] = primary + backups

    def __iter__(self) -> Iterator[RealmState]:
        return iter(list(self._realms.values()))

    def get(self, name: str) -> RealmState | None:
        return self._realms.get(name)

    def primary(self, query_type: str) -> RealmState | None:
        route = self._routes.get(query_type)
        return route[0] if route and query_type in route[0].primary_for else None

    def route(self, query_type: str) -> list[RealmState]:
        """Realms to try for a query type: its primary, then its backups by name."""
        return self._routes.get(query_type, [])

    def home_of(self, worker_realm: str, worker_type: str) -> str:
        """A worker's realm: the one it was given, else the primary realm of its type."""
        if worker_realm in self._realms:
            return worker_realm
        primary = self.primary(worker_type)
        return primary.name if primary else ""
