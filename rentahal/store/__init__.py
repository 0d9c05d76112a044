"""The store: SQLAlchemy models, one repository per aggregate, Alembic migrations."""

from __future__ import annotations

from rentahal.store.audit import AuditRepository
from rentahal.store.credential_cache import CredentialCache
from rentahal.store.credentials import CredentialRepository
from rentahal.store.database import Database
from rentahal.store.ledger import LedgerRepository
from rentahal.store.models import Query, QueryState, Role, User, Worker, utcnow
from rentahal.store.oauth_tokens import OAuthTokenRepository
from rentahal.store.outage import StoreHealth, StoreUnavailable, is_outage
from rentahal.store.peers import PeerRepository
from rentahal.store.queries import QueryRepository
from rentahal.store.realms import PoolRepository, RealmRepository
from rentahal.store.stats import StatsRepository, SystemStats
from rentahal.store.users import NicknameTaken, UserRepository
from rentahal.store.workers import AlreadyExists, ModelRepository, WorkerRepository

__all__ = [
    "AlreadyExists",
    "Database",
    "NicknameTaken",
    "Query",
    "QueryState",
    "Role",
    "Store",
    "StoreHealth",
    "StoreUnavailable",
    "SystemStats",
    "User",
    "Worker",
    "is_outage",
    "utcnow",
]


class Store:
    """The database and its repositories, opened once per process."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        # Who each credential names, shared by the repositories that change it.
        self.credential_cache = CredentialCache()
        self.users = UserRepository(self.db, self.credential_cache)
        self.credentials = CredentialRepository(self.db, self.credential_cache)
        self.queries = QueryRepository(self.db)
        self.workers = WorkerRepository(self.db)
        self.models = ModelRepository(self.db)
        self.stats = StatsRepository(self.db)
        self.realms = RealmRepository(self.db)
        self.pools = PoolRepository(self.db)
        self.audit = AuditRepository(self.db)
        self.oauth_tokens = OAuthTokenRepository(self.db)
        self.peers = PeerRepository(self.db)
        self.ledger = LedgerRepository(self.db, self.credential_cache)
        self.health = StoreHealth(self.db.engine)

    async def open(self) -> Store:
        await self.db.migrate()
        return self

    def forget_remembered(self) -> None:
        """Drop what the store keeps in memory of its rows (API keys and their users, the
        connected-users mark): for a database whose tables were emptied behind its back."""
        self.credential_cache.clear()
        self.stats.forget_remembered()

    async def close(self) -> None:
        await self.credentials.close()
        await self.health.close()
        await self.queries.close()
        await self.db.close()
