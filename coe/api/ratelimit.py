"""The per-key request rate limit: one token bucket per API key in Redis, taken from atomically by
a Lua script on Redis' own clock (so several API processes share one limit)."""

from __future__ import annotations

import hashlib
import logging
import math

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coe.config import RateLimit

log = logging.getLogger("coe.api")

#: KEYS[1]: the bucket; ARGV: refill rate (tokens per second), size. Returns {allowed, wait in ms}.
TAKE = """
local rate, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = size, now end
tokens = math.min(size, tokens + math.max(0, now - at) * rate)
local allowed, wait_ms = 0, 0
if tokens >= 1 then
  tokens, allowed = tokens - 1, 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(size / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


class RateLimiter:
    """``await take(identity)`` returns 0 when the request may go, else seconds to wait."""

    def __init__(self, redis: aioredis.Redis, limit: RateLimit) -> None:
        self.rate = limit.requests_per_minute / 60.0
        self.size = limit.burst
        self._take = redis.register_script(TAKE)

    async def take(self, identity: str) -> float:
        # the bucket is named by a hash: no key ever reaches Redis
        bucket = "coe:ratelimit:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
        try:
            allowed, wait_ms = await self._take(keys=[bucket], args=[self.rate, self.size])
        except RedisError as err:  # an outage of Redis must not take the API down with it
            log.warning("rate limit not applied: Redis failed (%s)", err)
            return 0.0
        return 0.0 if int(allowed) else max(1.0, math.ceil(int(wait_ms) / 1000))
