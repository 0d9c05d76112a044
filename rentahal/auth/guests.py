"""Forgetting guests nobody will miss.

A guest is stored only when it first does something that needs an account (see
`Authenticator.save`), but a stored guest who never came back would stay forever. The sweep
deletes guests last seen over `guest_expiry_days` ago who left nothing behind (the rule is
`UserRepository.delete_idle_guests`): once when the broker starts, then every hour.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from rentahal.core.periodic import Periodic
from rentahal.store import Store, is_outage, utcnow

log = structlog.get_logger(__name__)

SWEEP_INTERVAL = 3600.0  # seconds; expiry is counted in days, so an hour is exact enough


class GuestSweep(Periodic):
    def __init__(self, store: Store, expiry_days: int) -> None:
        super().__init__("guest-sweep", SWEEP_INTERVAL)
        self._store = store
        self._expiry = timedelta(days=expiry_days)

    async def sweep(self) -> int:
        """Delete the idle guests now; returns how many."""
        deleted = await self._store.users.delete_idle_guests(seen_before=utcnow() - self._expiry)
        if deleted:
            log.info("guests.swept", deleted=deleted)
        return deleted

    async def tick(self) -> None:
        await self.sweep()

    def failed(self, exc: Exception) -> None:
        if is_outage(exc):
            self._store.health.failed(exc)  # said once, for the whole outage
        else:
            log.warning("guests.sweep_failed", exc_info=exc)  # tried again next time
