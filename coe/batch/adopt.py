"""Workers adopt orphaned batches: an adoptable batch whose driver lease lapsed gets a new driver.

A batch submitted with ``coe batch submit --detach``, or whose submitting process died, is driven
by the first worker that sees it without a driver. The new driver re-runs the unfinished items;
calls whose results are stored resolve at once, calls already queued are not queued again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from coe.batch import keys
from coe.batch.driver import BatchDriver, graph_factory, load_batch_graph
from coe.batch.store import BatchStore
from coe.config import Settings
from coe.errors import CoeError

log = logging.getLogger("coe.worker")


class Adopter:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, experts: Sequence[str], interval_s: float = 2.0
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.experts = list(experts)
        self.interval_s = interval_s
        self.driving: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Look for orphaned batches every ``interval_s`` until cancelled."""
        try:
            while True:
                try:
                    await self._look()
                except RedisConnectionError as err:
                    log.warning("adopter: redis unreachable (%s)", err)
                await asyncio.sleep(self.interval_s)
        finally:
            for task in self.driving.values():
                task.cancel()
            await asyncio.gather(*self.driving.values(), return_exceptions=True)

    async def _look(self) -> None:
        for raw in await self.redis.smembers(keys.BATCHES):
            batch_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            if batch_id in self.driving or await self.redis.exists(keys.driver_lease(batch_id)):
                continue
            self.driving[batch_id] = asyncio.create_task(self._drive(batch_id))

    async def _drive(self, batch_id: str) -> None:
        try:
            meta = await BatchStore(self.redis).meta(batch_id)
            loaded, _ = load_batch_graph(self.settings, meta["graph"])
            driver = BatchDriver(
                self.redis,
                batch_id,
                graph_factory(loaded, meta["pool"]),
                queued=self.experts,
                lease_s=self.settings.batch_lease_s,
            )
            log.info("adopted batch %s (graph %s)", batch_id, meta["graph"])
            status = await driver.run()
            log.info("batch %s finished: %s", batch_id, status["items"])
        except CoeError as err:
            log.warning("cannot drive batch %s: %s", batch_id, err)
        finally:
            self.driving.pop(batch_id, None)
