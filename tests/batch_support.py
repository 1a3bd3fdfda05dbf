"""Helpers shared by the batch tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from coe.batch.calls import Outcome


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 240, every_s: float = 0.05) -> None:
    """Poll ``check`` until it returns something true (state lives in other processes: no event)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(every_s)


async def outcomes(redis: aioredis.Redis, batch: str) -> dict[str, Outcome]:
    """Every stored call outcome of a batch, by result key."""
    found = {}
    async for key in redis.scan_iter(f"coe:result:{batch}:*"):
        found[key.decode()] = Outcome.from_json(await redis.get(key))
    return found
