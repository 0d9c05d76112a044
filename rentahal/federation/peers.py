"""The peer installations a sysop added, and what each serves now.

Peers are kept in the store (every broker of an installation sees the same ones), each with
the key the peer issued for us, sealed with this installation's secret so that a copy of the
database does not hand it out. Every `federation_refresh_interval`, and whenever a sysop adds
one, each peer is asked what it serves (`GET /api/v1/federation/advertise`). A peer is routed
to like a worker of kind `federation`, as a last resort: only for a query that no local
worker that is alive could serve, and never for one that has already been through the peer.
Its name is the one the sysop gave it: a query it served shows `<that name>/<its worker>`.

Each peer has one account here, `peer-<name>` (`peer_account`): the work it does for us is
credited to it as a worker owner's is, and the queries it forwards to us run as it and are
charged to it. Its balance is what is owed between the two installations, and the peer's
ledger holds the same debt on our account there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import httpx
import structlog
from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError

from rentahal.auth.nicknames import PEER_PREFIX
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.periodic import Periodic
from rentahal.core.vocabulary import WorkerKind
from rentahal.federation.wire import Advertisement
from rentahal.routing.registry import WorkerState
from rentahal.store import Role, User, utcnow
from rentahal.store.models import Peer
from rentahal.store.oauth_tokens import TokenCipher
from rentahal.store.peers import PeerRepository
from rentahal.store.users import NicknameTaken, UserRepository
from rentahal.store.workers import AlreadyExists

log = structlog.get_logger(__name__)

PEER_SLOTS = 16  # queries forwarded to one peer at once; its own queue holds the rest
ADVERTISE_TIMEOUT = 5.0
_PURPOSE = b"rentahal/federation-peer-keys/v1"


async def peer_account(users: UserRepository, peer: str) -> User:
    """The account of a peer installation here, `peer-<peer>`, made the first time it is
    needed: the queries it forwards run as it, and the work it does for us is credited to
    it, so its balance is what is owed between us (either way)."""
    nickname = f"{PEER_PREFIX}{peer}"
    if (account := await users.get_by_nickname(nickname)) is not None:
        return account
    try:
        return await users.create(role=Role.USER, nickname=nickname)
    except NicknameTaken:  # made meanwhile by another request
        account = await users.get_by_nickname(nickname)
        assert account is not None
        return account


def federation_id_of(secret_key: str, configured: str) -> str:
    """This installation's name in hop lists: the configured one, else one derived from the
    secret key that all its brokers share (and no other installation has)."""
    if configured:
        return configured
    return "rh-" + hashlib.sha256(b"rentahal.federation:" + secret_key.encode()).hexdigest()[:16]


class ConfiguredPeer(BaseModel):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=512)]
    key: Annotated[str, StringConstraints(min_length=16, max_length=256)]


_CONFIGURED = TypeAdapter(list[ConfiguredPeer])


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer as sysops see it (never its key)."""

    name: str
    url: str
    account_id: str  # its account here: its balance is what this installation owes it
    reachable: bool
    federation_id: str | None
    query_types: list[str]
    models: list[str]
    checked_at: datetime | None


class PeerDirectory(Periodic):
    def __init__(
        self,
        peers: PeerRepository,
        users: UserRepository,
        http: httpx.AsyncClient,
        secret_key: str,
        *,
        own_id: str,
        max_hops: int,
        interval: float,
    ) -> None:
        super().__init__("federation-peers", interval)
        self._peers = peers
        self._users = users
        self._http = http
        self._cipher = TokenCipher(secret_key, purpose=_PURPOSE)
        self.own_id = own_id
        self._max_hops = max_hops
        self._workers: dict[str, WorkerState] = {}
        self._views: dict[str, PeerView] = {}

    # --- routing ---------------------------------------------------------------------------

    def routable(self, hops: Sequence[str]) -> list[WorkerState]:
        """The peers a query that has been through `hops` may still go to: not past
        `federation_max_hops`, and never back to an installation it has been through."""
        if len(hops) + 1 > self._max_hops:
            return []
        been = {*hops, self.own_id}
        return [
            worker
            for worker in self._workers.values()
            if self._views[worker.name].federation_id not in been
        ]

    # --- what sysops do --------------------------------------------------------------------

    async def add(self, name: str, url: str, key: str) -> PeerView:
        """Add a peer, and its account here if it has none yet (`peer_account`)."""
        url = url.rstrip("/")
        account = await peer_account(self._users, name)
        sealed = self._cipher.seal({"key": key}, bound_to=name)
        peer = Peer(name=name, url=url, sealed_key=sealed, account_id=account.id)
        try:
            await self._peers.add(peer)
        except AlreadyExists:
            raise ProtocolError(ErrorCode.CONFLICT, f"a peer named {name!r} exists") from None
        await self._check(peer)
        log.info("federation.peer_added", peer=name, url=url)
        return self._views[name]

    async def remove(self, name: str) -> None:
        if not await self._peers.remove(name):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no peer named {name!r}")
        self._forget(name)
        log.info("federation.peer_removed", peer=name)

    async def bootstrap(self, configured: str) -> None:
        """Add the peers the config names (JSON: a list of `{name, url, key}`) that the store
        does not have yet; a sysop's later changes are the store's and stay."""
        try:
            peers = _CONFIGURED.validate_json(configured)
        except ValidationError as exc:  # never said with the text itself: it holds keys
            log.error("federation.bad_configured_peers", errors=exc.error_count())
            return
        known = {peer.name for peer in await self._peers.list()}
        for peer in peers:
            if peer.name not in known:
                with contextlib.suppress(ProtocolError):  # another broker added it meanwhile
                    await self.add(peer.name, peer.url, peer.key)

    def views(self) -> list[PeerView]:
        return [self._views[name] for name in sorted(self._views)]

    async def refresh(self) -> None:
        """Read the peers from the store (another broker may have changed them) and ask each
        what it serves now."""
        peers = await self._peers.list()
        for gone in set(self._views) - {peer.name for peer in peers}:
            self._forget(gone)
        await asyncio.gather(*(self._check(peer) for peer in peers))

    # --- the periodic refresh --------------------------------------------------------------

    async def tick(self) -> None:
        await self.refresh()

    def failed(self, exc: Exception) -> None:
        log.warning("federation.refresh_failed", error=str(exc) or type(exc).__name__)

    async def _check(self, peer: Peer) -> None:
        opened = self._cipher.open(peer.sealed_key, bound_to=peer.name)
        key = opened.get("key") if opened else None
        advertised: Advertisement | None = None
        if isinstance(key, str):
            try:
                response = await self._http.get(
                    f"{peer.url}/api/v1/federation/advertise",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=ADVERTISE_TIMEOUT,
                )
                if response.status_code == 200:
                    advertised = Advertisement.model_validate_json(response.content)
                else:
                    log.warning(
                        "federation.peer_refused", peer=peer.name, status=response.status_code
                    )
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("federation.peer_unreachable", peer=peer.name, error=str(exc))
        else:
            log.warning("federation.peer_key_unreadable", peer=peer.name)
        self._views[peer.name] = PeerView(
            name=peer.name,
            url=peer.url,
            account_id=peer.account_id,
            reachable=advertised is not None,
            federation_id=advertised.federation_id if advertised else None,
            query_types=sorted(advertised.query_types) if advertised else [],
            models=sorted(advertised.models) if advertised else [],
            checked_at=utcnow(),
        )
        worker = self._workers.get(peer.name)
        if worker is None:
            worker = self._workers[peer.name] = WorkerState(
                name=peer.name,
                address=peer.url,
                kind=WorkerKind.FEDERATION,
                capabilities=frozenset(),
                models=(),
                max_concurrency=PEER_SLOTS,
                health_score=0.0,
                blacklisted=False,
                last_active=None,
                owner_id=peer.account_id,
            )
        worker.address = peer.url
        worker.key = key if isinstance(key, str) else None
        worker.capabilities = frozenset(advertised.query_types) if advertised else frozenset()
        worker.models = tuple(advertised.models) if advertised else ()
        worker.health_score = 100.0 if advertised else 0.0

    def _forget(self, name: str) -> None:
        self._views.pop(name, None)
        worker = self._workers.pop(name, None)
        if worker is not None:
            worker.removed = True
