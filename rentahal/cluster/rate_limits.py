"""Rate limits counted across every broker of a cluster: the token buckets of
`rentahal.limits`, kept in Redis, so a caller gets the same number of requests a minute
however a load balancer spreads them.

One script takes a token from every bucket a request counts against, or from none of them
(the all-or-nothing of `RateLimiter.acquire`), in Redis's clock. A bucket expires once it
would have refilled, so idle callers cost Redis nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import RedisError

from rentahal.cluster.node import ClusterNode
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.limits import Limit

# KEYS: the buckets; ARGV: capacity and period (ms) of each, in turn. Returns the seconds to
# wait, as text (0: a token was taken from each).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait, tokens = 0, {}
for i, key in ipairs(KEYS) do
  local capacity, period = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local held = redis.call('HMGET', key, 'tokens', 'updated')
  local have, updated = tonumber(held[1]), tonumber(held[2])
  if have == nil then have, updated = capacity, now end
  have = math.min(capacity, have + math.max(0, now - updated) * capacity / period)
  tokens[i] = have
  if have < 1 then wait = math.max(wait, (1 - have) * period / capacity) end
end
for i, key in ipairs(KEYS) do
  local have = tokens[i]
  if wait == 0 then have = have - 1 end
  redis.call('HSET', key, 'tokens', tostring(have), 'updated', now)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i]))
end
return tostring(wait / 1000)
"""


class RedisBuckets:
    def __init__(self, node: ClusterNode, name: str) -> None:
        """`name` keeps one kind of limit apart from another (queries, registrations)."""
        self._node = node
        self._name = name
        self._take = node.redis.register_script(_TAKE)

    async def take(self, limits: Sequence[Limit]) -> float:
        counted = [limit for limit in limits if limit.capacity > 0]
        if not counted:
            return 0.0
        args: list[float] = []
        for limit in counted:
            args += [limit.capacity, int(limit.period * 1000)]
        try:
            wait = await self._take(
                keys=[self._node.key("limits", self._name, limit.key) for limit in counted],
                args=args,
            )
        except (RedisError, OSError):
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the cluster's shared state (Redis) is unavailable just now; try again shortly",
            ) from None
        return float(wait)
