"""The realms' lines shared by every broker of a cluster (the shared `JobQueue` of
`rentahal.core.ports`): users take turns across the whole installation, and the per-user
limit on waiting jobs counts every broker's.

The rules are `FairQueue`'s: priority classes first, then one turn per user, and a job
pushed back (a retry, a next step) goes to the front of its owner's line. In Redis, each realm
has a sorted set of the users with jobs waiting, scored by priority and then by when their
turn came; each user has a list of job ids. A hash holds each waiting job's description: who,
where, its retry state, and its query's columns without its media. Each push gives the
description a new version, so a broker reads a description once and knows when it changed.
Every change is one script, so two brokers can never both take the same job. `take` says
whether this broker got the job, and the dispatcher moves on if it did not.

Every broker reads the same lines and dispatches whatever it has a worker slot for. A broker
that takes a job it did not accept loads the query, media included, from the database. A push
is published, so every broker looks for a slot at once.

The lines live in Redis only. The database holds each waiting job as `queued`, held by the
broker that last queued it. If Redis loses its data (a restart without persistence), each
broker queues its jobs again once it hears Redis again (`Scheduler.queue_held`), and a push
of a job already waiting changes nothing. A dead broker's waiting jobs stay in the lines, and
the others take them as any others (`reclaim` also hands them over).

The scripts build the per-user keys they touch, which a single Redis allows. A Redis Cluster
would need each realm's keys under one hash tag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from redis.exceptions import RedisError

from rentahal.cluster.node import ClusterNode
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.routing.realms import RealmTable
from rentahal.scheduler.jobs import Job
from rentahal.store import Query

log = structlog.get_logger(__name__)

PRIORITY_SPAN = 1e12  # a turn score is priority × this + the turn's serial number
MEDIA = frozenset({"image", "audio", "output"})
_COLUMNS = [c.name for c in Query.__table__.columns if c.name not in MEDIA]
_DATES = {c.name for c in Query.__table__.columns if c.name.endswith("_at")}

_LIB = """
local p, realm = ARGV[1], ARGV[2]
local function line(user) return p .. 'line:' .. realm .. ':' .. user end
local turns = p .. 'turns:' .. realm
local function count(hash, field, by)
  if redis.call('HINCRBY', p .. hash, field, by) <= 0 then redis.call('HDEL', p .. hash, field) end
end
local function next_turn(user, priority)
  redis.call('ZADD', turns, priority * 1e12 + redis.call('INCR', p .. 'turn'), user)
end
"""

# ARGV: prefix, realm, user, priority, id, description, front. Returns the job's place in
# dispatch order (1 = next) and the version of its description, or {0, 0} if it was waiting
# already.
_PUSH = (
    _LIB
    + """
local user, priority, id = ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('HSETNX', p .. 'jobs', id, ARGV[6]) == 0 then return {0, 0} end
local version = redis.call('INCR', p .. 'version')
redis.call('HSET', p .. 'versions', id, version)
redis.call(ARGV[7] == '1' and 'LPUSH' or 'RPUSH', line(user), id)
if not redis.call('ZSCORE', turns, user) then next_turn(user, priority) end
count('depth', realm, 1)
count('per_user', user, 1)
local rounds = redis.call('LPOS', line(user), id)
local mine = tonumber(redis.call('ZSCORE', turns, user))
local ahead = rounds
local users = redis.call('ZRANGE', turns, 0, -1, 'WITHSCORES')
for i = 1, #users, 2 do
  local other, score = users[i], tonumber(users[i + 1])
  if other ~= user then
    local waiting = redis.call('LLEN', line(other))
    if math.floor(score / 1e12) < math.floor(mine / 1e12) then
      ahead = ahead + waiting
    elseif math.floor(score / 1e12) == math.floor(mine / 1e12) then
      ahead = ahead + math.min(waiting, rounds + (score < mine and 1 or 0))
    end
  end
end
return {ahead + 1, version}
"""
)

# ARGV: prefix, realm, user, id, and '1' if the user takes a turn (a dispatch) or '0' (a
# cancel). Returns 1 if the job was waiting (and now is not), else 0.
_LEAVE = (
    _LIB
    + """
local user, id = ARGV[3], ARGV[4]
if redis.call('LREM', line(user), 1, id) == 0 then return 0 end
redis.call('HDEL', p .. 'jobs', id)
redis.call('HDEL', p .. 'versions', id)
count('depth', realm, -1)
count('per_user', user, -1)
if redis.call('LLEN', line(user)) == 0 then
  redis.call('ZREM', turns, user)
elseif ARGV[5] == '1' then
  next_turn(user, math.floor(tonumber(redis.call('ZSCORE', turns, user)) / 1e12))
end
return 1
"""
)

# ARGV: prefix, realm. Each user's next job in turn order, as id, version, id, ...
_HEADS = (
    _LIB
    + """
local heads = {}
for _, user in ipairs(redis.call('ZRANGE', turns, 0, -1)) do
  local id = redis.call('LINDEX', line(user), 0)
  if id then
    heads[#heads + 1] = id
    heads[#heads + 1] = redis.call('HGET', p .. 'versions', id) or '0'
  end
end
return heads
"""
)


def _unavailable() -> ProtocolError:
    return ProtocolError(
        ErrorCode.UNAVAILABLE,
        "the cluster's shared state (Redis) is unavailable just now; try again shortly",
    )


def describe(job: Job) -> str:
    """A waiting job as another broker needs it: enough to route it and to take turns."""
    query: dict[str, Any] = {}
    for name in _COLUMNS:
        value = getattr(job.query, name)
        query[name] = value.isoformat() if isinstance(value, datetime) else value
    wall = time.time() - time.monotonic()  # monotonic → wall clock, for the other brokers
    return json.dumps(
        {
            "role": job.role,
            "realm": job.realm,
            "excluded": sorted(job.excluded),
            "not_before": job.not_before + wall if job.not_before else 0.0,
            "enqueued": job.enqueued + wall,
            "request_id": job.request_id,
            "query": query,
        },
        separators=(",", ":"),
    )


def job_from(description: str) -> Job:
    """The job another broker described, its query without media (loaded when taken)."""
    fields = json.loads(description)
    columns = {
        name: datetime.fromisoformat(value) if name in _DATES and value else value
        for name, value in fields["query"].items()
    }
    monotonic = time.monotonic() - time.time()
    return Job(
        Query(**columns),
        role=fields["role"],
        realm=fields["realm"],
        excluded=set(fields["excluded"]),
        not_before=fields["not_before"] + monotonic if fields["not_before"] else 0.0,
        enqueued=fields["enqueued"] + monotonic,
        request_id=fields["request_id"],
    )


class RedisQueue:
    def __init__(
        self,
        node: ClusterNode,
        realms: RealmTable,
        default_limit: int,
        load: Callable[[str], Awaitable[Query | None]],
        pump: Callable[[], None],
    ) -> None:
        """`load` reads a query with its media (for a job another broker queued); `pump`
        asks for a dispatch pass (another broker queued a job)."""
        self._node = node
        self._realms = realms
        self._default = default_limit
        self._load = load
        self._prefix = node.key("queue") + ":"
        self._push = node.redis.register_script(_PUSH)
        self._leave = node.redis.register_script(_LEAVE)
        self._heads = node.redis.register_script(_HEADS)
        # The jobs this broker has seen, by id, with the version of the description they
        # were seen under: its own keep their media, one described anew (another broker's
        # retry) is read and built anew, and the others' descriptions are read only once.
        self._seen: dict[str, tuple[int, Job]] = {}
        self._partial: set[str] = set()  # built from a description: media not loaded
        self._depths: dict[str, int] = {}
        node.on("queued", lambda _: pump())

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _limit(self, realm: str) -> int:
        state = self._realms.get(realm)
        return state.max_queue_size if state else self._default

    async def push(self, realm: str, job: Job, *, front: bool = False) -> int:
        description = describe(job)
        try:
            place, version = await self._push(
                args=[
                    self._prefix,
                    realm,
                    job.user_id,
                    job.priority,
                    job.query.id,
                    description,
                    "1" if front else "0",
                ]
            )
        except (RedisError, OSError):
            raise _unavailable() from None
        if version:
            self._seen[job.query.id] = (int(version), job)
        self._node.publish("queued")
        return int(place) or 1

    async def full(self, realm: str) -> bool:
        depth = await self._read(self._node.redis.hget(self._key("depth"), realm))
        return int(depth or 0) >= self._limit(realm)

    async def count_for(self, user_id: str) -> int:
        return int(await self._read(self._node.redis.hget(self._key("per_user"), user_id)) or 0)

    async def realms(self) -> list[str]:
        depths = await self._read(self._node.redis.hgetall(self._key("depth")))
        self._depths = {realm: int(depth) for realm, depth in sorted(depths.items())}
        return list(self._depths)

    async def heads(self, realm: str) -> list[Job]:
        flat = await self._read(self._heads(args=[self._prefix, realm]))
        return await self._jobs(dict(zip(flat[::2], map(int, flat[1::2]), strict=True)))

    async def take(self, realm: str, job: Job) -> bool:
        if not await self._leaves(realm, job, turn=True):
            return False
        if job.query.id in self._partial:
            query = await self._load(job.query.id)
            if query is None:  # its owner was deleted meanwhile
                log.warning("cluster.queued_query_gone", query_id=job.query.id)
                return False
            job.query = query
        return True

    async def remove(self, realm: str, job: Job) -> bool:
        return await self._leaves(realm, job, turn=False)

    async def _leaves(self, realm: str, job: Job, *, turn: bool) -> bool:
        args = [self._prefix, realm, job.user_id, job.query.id, "1" if turn else "0"]
        left = bool(await self._read(self._leave(args=args)))
        self._seen.pop(job.query.id, None)
        self._partial.discard(job.query.id)
        return left

    async def waiting(self) -> list[tuple[str, Job]]:
        """Every waiting job; what this broker remembers of jobs that left is let go."""
        versions = await self._read(self._node.redis.hgetall(self._key("versions")))
        for gone in set(self._seen) - set(versions):
            self._seen.pop(gone, None)
            self._partial.discard(gone)
        jobs = await self._jobs({id_: int(version) for id_, version in versions.items()})
        return [(job.realm, job) for job in jobs]

    def depths(self) -> dict[str, int]:
        """As of this broker's last dispatch pass."""
        return dict(self._depths)

    def resize(self) -> None:
        """Nothing to do: each realm's limit is read when a job is pushed."""

    async def _jobs(self, versions: dict[str, int]) -> list[Job]:
        """The jobs of these ids (in this order) as of these versions of their descriptions;
        the descriptions not seen yet are read in one call. A job that left meanwhile is
        left out."""
        unseen = [id_ for id_, v in versions.items() if self._seen.get(id_, (0,))[0] != v]
        if unseen:
            texts = await self._read(self._node.redis.hmget(self._key("jobs"), unseen))
            for id_, text in zip(unseen, texts, strict=True):
                if text is not None:
                    self._seen[id_] = (versions[id_], job_from(text))
                    self._partial.add(id_)
        return [self._seen[id_][1] for id_ in versions if id_ in self._seen]

    async def _read(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (RedisError, OSError):
            raise _unavailable() from None
