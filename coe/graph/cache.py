"""A small text cache for what a graph generates once and reuses (SMoA's role descriptions).

One interface, three homes: Redis where the service has one (``RedisCache``), files under the state
directory otherwise (``FileCache``), or memory (``MemoryCache``, the default of a pipeline built
without one). Values are JSON text; keys are short strings chosen by the caller.
"""

from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["CacheSlot", "FileCache", "MemoryCache", "RedisCache", "TextCache", "open_cache"]


class TextCache(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The stored text, or None."""

    @abc.abstractmethod
    async def put(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing any)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryCache(TextCache):
    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def put(self, key: str, value: str) -> None:
        self._values[key] = value


class FileCache(TextCache):
    """One file per key under ``folder`` (named by the key's hash), written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    async def get(self, key: str) -> str | None:
        try:
            return self._path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    async def put(self, key: str, value: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(value, encoding="utf-8")
        tmp.replace(path)


class RedisCache(TextCache):
    """Keys live under ``prefix`` in the Redis at ``url`` (connected on first use)."""

    def __init__(self, url: str, prefix: str = "coe:cache:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, decode_responses=True)
        return self._client

    async def get(self, key: str) -> str | None:
        value = await self._redis().get(self.prefix + key)
        return None if value is None else str(value)

    async def put(self, key: str, value: str) -> None:
        await self._redis().set(self.prefix + key, value)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class CacheSlot(TextCache):
    """The cache a compiled graph holds: another cache, which can be swapped after compilation
    (the service learns its Redis URL only once Redis has started)."""

    def __init__(self, target: TextCache | None = None) -> None:
        self.target: TextCache = target if target is not None else MemoryCache()

    async def get(self, key: str) -> str | None:
        return await self.target.get(key)

    async def put(self, key: str, value: str) -> None:
        await self.target.put(key, value)

    async def aclose(self) -> None:
        await self.target.aclose()


def open_cache(redis_url: str | None, state_dir: Path) -> TextCache:
    """Redis where there is one, else files under ``STATE_DIR/cache``."""
    return RedisCache(redis_url) if redis_url else FileCache(state_dir.expanduser() / "cache")
