"""Redis for batch work: the ``REDIS_URL`` one, or a persistent local redis-server.

With ``REDIS_URL`` unset, batch commands share one redis-server whose data (AOF, ``appendfsync
always``) lives in ``STATE_DIR/batch/data``: ``coe batch submit`` starts it, and a later ``coe batch
status`` starts it again on the same data. While one coe process runs it (it holds
``STATE_DIR/batch/lock``), others connect to that server instead of starting a second one.
Clients retry commands while Redis restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coe.config import Settings
from coe.errors import LaunchError
from coe.redis_server import RedisServer

#: Commands are retried for about this long while Redis is unreachable (a restart, say).
RETRY_FOR_S = 120


def connect(url: str) -> aioredis.Redis:
    retries = int(RETRY_FOR_S / 0.5)
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_url(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None


class LocalRedis:
    """The local batch redis-server: started here, or the one another coe process runs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server: RedisServer | None = None
        self._lock: IO[bytes] | None = None

    @property
    def _info(self) -> Path:
        return self.folder / "server.json"

    async def start(self, timeout_s: float = 30.0) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            self._lock = _try_lock(self.folder / "lock")
            if self._lock is not None:
                return await self._start_own()
            url = _read_url(self._info)
            if url is not None:
                client = aioredis.Redis.from_url(url)
                try:
                    with contextlib.suppress(RedisConnectionError):
                        if await client.ping():
                            return url
                finally:
                    await client.aclose()
            await asyncio.sleep(0.2)
        raise LaunchError(f"the batch redis-server in {self.folder} is locked but does not answer")

    async def _start_own(self) -> str:
        self.server = RedisServer(data_dir=self.folder / "data")
        try:
            url = await self.server.start()
        except BaseException:
            await self.stop()
            raise
        self._info.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        return url

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
            self._info.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@contextlib.asynccontextmanager
async def batch_redis(settings: Settings) -> AsyncIterator[tuple[aioredis.Redis, bool]]:
    """A client for batch work and whether Redis is local (then no external worker is assumed)."""
    local = None
    url = settings.redis_url
    if url is None:
        local = LocalRedis(settings.state_dir / "batch")
        url = await local.start()
    client = connect(url)
    try:
        yield client, local is not None
    finally:
        await client.aclose()
        if local is not None:
            await local.stop()
