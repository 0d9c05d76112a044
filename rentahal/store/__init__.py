"""The store: SQLAlchemy models, one repository per aggregate, Alembic migrations."""

from __future__ import annotations

from rentahal.store.audit import AuditRepository
from rentahal.store.credentials import CredentialRepository
from rentahal.store.database import Database
from rentahal.store.ledger import LedgerRepository
from rentahal.store.models import Query, QueryState, Role, User, Worker, utcnow
from rentahal.store.oauth_tokens import OAuthTokenRepository
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
    "SystemStats",
    "User",
    "Worker",
    "utcnow",
]


class Store:
    """The database and its repositories, opened once per process."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.users = UserRepository(self.db)
        self.credentials = CredentialRepository(self.db)
        self.queries = QueryRepository(self.db)
        self.workers = WorkerRepository(self.db)
        self.models = ModelRepository(self.db)
        self.stats = StatsRepository(self.db)
        self.realms = RealmRepository(self.db)
        self.pools = PoolRepository(self.db)
        self.audit = AuditRepository(self.db)
        self.oauth_tokens = OAuthTokenRepository(self.db)
        self.ledger = LedgerRepository(self.db)

    async def open(self) -> Store:
        await self.db.migrate()
        return self

    async def close(self) -> None:
        await self.queries.close()
        await self.db.close()
