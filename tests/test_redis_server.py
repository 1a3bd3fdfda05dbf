"""RedisServer: a real redis-server that coe starts, configures for durability and stops."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from conftest import alive, cmdline

from coe.redis_server import RedisServer, redis_binary

pytestmark = pytest.mark.asyncio


async def test_session_server_answers(redis_server: str) -> None:
    async with aioredis.Redis.from_url(redis_server) as client:
        assert await client.ping()


async def test_start_config_stop(tmp_path: Path) -> None:
    server = RedisServer(parent_dir=tmp_path)
    url = await server.start()
    pid = server.pid
    assert pid is not None and alive(pid)
    assert cmdline(pid).startswith(redis_binary())
    assert url == f"redis://127.0.0.1:{server.port}/0"
    try:
        async with aioredis.Redis.from_url(url, decode_responses=True) as client:
            assert await client.ping()
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            assert await client.config_get("appendfsync") == {"appendfsync": "always"}
            assert await client.config_get("bind") == {"bind": "127.0.0.1"}
            assert await client.config_get("dir") == {"dir": str(server.data_dir)}
    finally:
        await server.stop()
    assert server.pid is None
    assert not alive(pid)
    assert not server.data_dir.exists(), "a folder coe made for itself is removed"


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    """With a data_dir of its own choosing, the AOF keeps every write across restarts."""
    first = RedisServer(data_dir=tmp_path / "data")
    async with first, aioredis.Redis.from_url(first.url) as client:
        await client.xadd("coe:test", {"n": "1"})
    assert (tmp_path / "data").is_dir()
    second = RedisServer(data_dir=tmp_path / "data")
    async with second, aioredis.Redis.from_url(second.url) as client:
        assert await client.xlen("coe:test") == 1
