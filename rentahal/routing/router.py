"""The router: which workers may serve a query, in which order, chosen by which strategy.

A query names a pool (`$NAME`), a realm (`$CHAT`), a worker, a model, or nothing. With
nothing, the workers of the primary realm for its type are tried first, then the backup
realms' (a backup realm takes work only when the primary has no free capacity) — unless its
seed `model_type` asks for a backend (`claude`, `huggingface`): then that backend's workers,
in whichever realm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rentahal.core.vocabulary import ModelType, Strategy, WorkerKind
from rentahal.routing.pools import PoolState, specialists
from rentahal.routing.realms import RealmTable
from rentahal.routing.registry import Registry, WorkerState
from rentahal.routing.strategies import Chooser

# The seed's `model_type`s that choose a backend, and the kind of worker each means.
BACKEND_OF: dict[str, WorkerKind] = {
    ModelType.CLAUDE: WorkerKind.CLAUDE,
    ModelType.HUGGINGFACE: WorkerKind.HUGGINGFACE,
}


@dataclass(frozen=True, slots=True)
class Tier:
    """A group of workers tried together: a pool, a realm, or the holders of a model."""

    key: str  # names the round-robin counter
    realm: str  # the realm whose capacity this is (for cross-realm accounting)
    strategy: str
    members: Callable[[WorkerState], bool]


@dataclass(frozen=True, slots=True)
class Choice:
    worker: WorkerState
    realm: str
    cross_realm: bool


def no_peers(hops: Sequence[str]) -> list[WorkerState]:
    return []


class Router:
    def __init__(self, registry: Registry, realms: RealmTable) -> None:
        self.registry = registry
        self.realms = realms
        self.pools: dict[str, PoolState] = {}
        self.chooser = Chooser()
        # The peer installations a query that has been through these installations may be
        # forwarded to (`rentahal.federation.peers.PeerDirectory.routable`).
        self.peers: Callable[[Sequence[str]], list[WorkerState]] = no_peers
        # Whether a worker this broker cannot send to serves the cluster through another
        # broker (an outbound worker connected there): queries for it are accepted here, and
        # that broker runs them from the shared line.
        self.served_elsewhere: Callable[[WorkerState], bool] = lambda worker: False

    def home_realm(self, worker: WorkerState) -> str:
        return self.realms.home_of(worker.realm, worker.primary_type)

    def queue_realm(self, query_type: str, model_name: str) -> str:
        """The realm whose queue holds such a query."""
        if (realm := self.realms.get(model_name)) is not None:
            return realm.name
        primary = self.realms.primary(query_type)
        return primary.name if primary else ""

    def tiers(self, query_type: str, model_name: str, model_type: str = "") -> list[Tier]:
        if model_name.startswith("$"):
            if (pool := self.pools.get(model_name)) is not None:
                members = frozenset(pool.members)
                realm = self.queue_realm(query_type, "")
                return [Tier(pool.name, realm, pool.strategy, lambda w: w.name in members)]
            if (named := self.realms.get(model_name)) is not None:
                return [self._realm_tier(named.name, named.strategy)]
            return []
        if model_name:
            primary = self.realms.primary(query_type)
            return [
                Tier(
                    f"model:{model_name}",
                    primary.name if primary else "",
                    primary.strategy if primary else "health",
                    lambda w: w.serves(query_type, model_name),
                )
            ]
        if (kind := BACKEND_OF.get(model_type)) is not None:
            return [self._backend_tier(query_type, kind)]
        return [self._realm_tier(r.name, r.strategy) for r in self.realms.route(query_type)]

    def _backend_tier(self, query_type: str, kind: WorkerKind) -> Tier:
        """Every worker of one backend, as the seed sent a `claude` or `huggingface` query to
        that API whatever else served the type; chosen among by the primary realm's rule."""
        primary = self.realms.primary(query_type)
        return Tier(
            f"backend:{kind}",
            primary.name if primary else "",
            primary.strategy if primary else "health",
            lambda w: w.kind == kind,
        )

    def _realm_tier(self, realm: str, strategy: str) -> Tier:
        return Tier(realm, realm, strategy, lambda w: self.home_realm(w) == realm)

    def _members(self, tier: Tier, query_type: str, exclude: frozenset[str]) -> list[WorkerState]:
        return [
            w
            for w in self.registry
            if query_type in w.capabilities and w.name not in exclude and tier.members(w)
        ]

    def could_serve(
        self,
        query_type: str,
        model_name: str,
        exclude: frozenset[str] = frozenset(),
        model_type: str = "",
        hops: Sequence[str] | None = None,
    ) -> bool:
        """Is there a live worker for this query at all, busy or not? With `hops` (the
        installations the query has been through), a peer installation counts too."""
        if self._serves_here(query_type, model_name, exclude, model_type):
            return True
        return hops is not None and any(
            w.alive for w in self._peer_members(query_type, model_name, exclude, hops)
        )

    def _serves_here(
        self, query_type: str, model_name: str, exclude: frozenset[str], model_type: str
    ) -> bool:
        """A worker of this installation is alive for the query (here, or on another
        broker of the cluster)."""
        return any(
            w.alive or self.served_elsewhere(w)
            for tier in self.tiers(query_type, model_name, model_type)
            for w in self._members(tier, query_type, exclude)
        )

    def any_free(self) -> bool:
        """Whether any worker here, or of a peer installation, could take a job right now:
        when none could, no waiting job can be dispatched, whatever it asks for."""
        return any(w.available for w in self.registry) or any(w.available for w in self.peers(()))

    def select(
        self,
        query_type: str,
        model_name: str,
        prompt: str = "",
        exclude: frozenset[str] = frozenset(),
        model_type: str = "",
        hops: Sequence[str] | None = None,
        overflow: bool = False,
    ) -> Choice | None:
        """A worker with a free slot now, by the first tier that has one; with `hops`, a
        peer installation when no worker here is alive for the query (busy ones are waited
        for), or, with `overflow` (it has waited long enough), when none is free."""
        for index, tier in enumerate(self.tiers(query_type, model_name, model_type)):
            candidates = [w for w in self._members(tier, query_type, exclude) if w.available]
            if candidates:
                worker = self.chooser.choose(
                    tier.key, tier.strategy, specialists(candidates, prompt)
                )
                return Choice(worker, tier.realm, cross_realm=index > 0)
        if hops is None:
            return None
        # Peers first: there are usually none, and then the scan of this installation's
        # workers below is not made for every waiting job of every dispatch pass.
        peers = [
            w for w in self._peer_members(query_type, model_name, exclude, hops) if w.available
        ]
        if not peers:
            return None
        if not overflow and self._serves_here(query_type, model_name, exclude, model_type):
            return None
        realm = self.queue_realm(query_type, model_name)
        return Choice(self.chooser.choose("federation", Strategy.LEAST_BUSY, peers), realm, True)

    def _peer_members(
        self, query_type: str, model_name: str, exclude: frozenset[str], hops: Sequence[str]
    ) -> list[WorkerState]:
        return [
            w
            for w in self.peers(hops)
            if w.serves(query_type, model_name) and w.name not in exclude
        ]
