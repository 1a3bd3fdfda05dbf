"""Leases: a Redis key naming the one owner of something (an expert's model, a batch's driver).

``SET key owner NX PX ttl`` takes it; the owner renews it well before it expires; a compare-and-
delete releases it. A dead owner's lease simply expires. If Redis itself was down for longer than
the ttl, the key is gone when it comes back and ``renew`` takes it again.
"""

from __future__ import annotations

import redis.asyncio as aioredis

_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    """Leases held by one owner (a worker or a driver)."""

    def __init__(self, redis: aioredis.Redis, owner: str, ttl_s: float) -> None:
        self.redis = redis
        self.owner = owner
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.held: set[str] = set()
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, key: str) -> bool:
        if key in self.held:
            return await self.renew(key)
        if await self.redis.set(key, self.owner, nx=True, px=self.ttl_ms):
            self.held.add(key)
            return True
        return await self.owner_of(key) == self.owner and await self.renew(key)

    async def renew(self, key: str) -> bool:
        """Extend a lease; False (and forgotten) if someone else holds it now."""
        if await self._renew(keys=[key], args=[self.owner, self.ttl_ms]):
            self.held.add(key)
            return True
        self.held.discard(key)
        return False

    async def release(self, key: str) -> None:
        self.held.discard(key)
        await self._release(keys=[key], args=[self.owner])

    async def owner_of(self, key: str) -> str | None:
        value = await self.redis.get(key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def owners(self, keys: list[str]) -> dict[str, str | None]:
        if not keys:
            return {}
        values = await self.redis.mget(keys)
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in zip(keys, values, strict=True)}
