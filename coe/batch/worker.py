"""``coe worker``: serves the experts' call streams with a model manager.

Each round the worker picks the expert with work to do: one whose model it already holds first
(that work costs no load), then the one with the most pending calls, the oldest call first on
ties. For an expert whose server coe launches it takes that expert's lease (``SET NX PX``, renewed
while held) so that no other worker loads the same model meanwhile, loads it (unloading others
when the memory budget is full), and drains its stream with as many calls in flight as the
server has slots. A model stays resident, lease held, until the budget needs its room.

A call is tried at most ``max_attempts`` times (counted when a worker takes it, so a call that
kills its worker counts too); a failed attempt puts it back on its stream; the last failure stores
the error as its outcome and adds it to the batch's dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from coe.batch import keys
from coe.batch.calls import Call, Outcome
from coe.batch.driver import owner_id
from coe.batch.lease import Leases
from coe.batch.manager import ModelManager, model_bytes
from coe.batch.queue import CallQueue
from coe.config import ExpertConfig, Settings
from coe.errors import CoeError, ExpertError, UserError
from coe.experts.base import ExpertClient
from coe.experts.pool import ExpertPool
from coe.types import Completion

log = logging.getLogger("coe.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    budget_bytes: int | None = None
    lease_s: float = 30.0
    visibility_s: float = 60.0
    max_attempts: int = 3
    poll_s: float = 0.25
    retry_backoff_s: float = 0.5  # before a failed call goes back on its stream; doubles per attempt

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerOptions:
        return cls(
            budget_bytes=settings.batch_memory_budget_bytes,
            lease_s=settings.batch_lease_s,
            visibility_s=settings.batch_visibility_timeout_s,
            max_attempts=settings.batch_max_attempts,
        )


class Worker:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        configs: Sequence[ExpertConfig],
        options: WorkerOptions | None = None,
        pool: ExpertPool | None = None,
    ) -> None:
        self.id = owner_id("worker")
        self.settings = settings
        self.options = options or WorkerOptions.from_settings(settings)
        self.experts = [c.name for c in configs]
        self.pool = pool if pool is not None else ExpertPool(configs, settings, bounded=False)
        self.manager = ModelManager(self.pool, {}, self.options.budget_bytes, self.id)
        self.queue = CallQueue(redis)
        self.leases = Leases(redis, self.id, self.options.lease_s)
        self.redis = redis
        self.calls_done: Counter[str] = Counter()
        self._in_flight: defaultdict[str, set[str]] = defaultdict(set)
        self._stop = asyncio.Event()
        #: set once nothing is served any more: the heartbeat ends on it (see ``run``)
        self._served = asyncio.Event()

    def add(self, client: ExpertClient) -> None:
        """Serve an extra in-process client (a replay expert, say) under its own name."""
        self.pool.add(client)
        self.experts.append(client.name)

    @property
    def _visibility_ms(self) -> int:
        return int(self.options.visibility_s * 1000)

    def stop(self) -> None:
        """Finish the calls in flight, unload every model and return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        if any(c.backend == "litellm" for c in self.pool.configs.values()):
            from coe.experts.litellm_client import load_litellm

            await asyncio.to_thread(load_litellm)  # seconds: before the first call, not during it
        for name, config in self.pool.configs.items():
            if self.manager.launched(name):
                self.manager.sizes[name] = await asyncio.to_thread(model_bytes, config, self.settings)
        await self.queue.ensure_groups(self.experts)
        log.info("worker %s serving %s", self.id, ", ".join(self.experts))
        serve = asyncio.create_task(self._serve_loop())
        beat = asyncio.create_task(self._heartbeat())
        try:
            await serve
        finally:
            self._served.set()  # the heartbeat ends on this too: a cancellation redis-py swallows
            beat.cancel()  # mid-command must not keep it (and this worker) running
            serve.cancel()
            await asyncio.gather(serve, beat, return_exceptions=True)
            await self._shutdown()

    async def _shutdown(self) -> None:
        for name in list(self.manager.resident):
            with contextlib.suppress(RedisConnectionError):
                await self._evict(name)
        await self.pool.stop()
        for key in list(self.leases.held):
            with contextlib.suppress(RedisConnectionError):
                await self.leases.release(key)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _serve_loop(self) -> None:
        while not self._stop.is_set():
            try:
                expert = await self._choose()
                if expert is None:
                    await self._pause(self.options.poll_s)
                else:
                    await self._serve(expert)
            except RedisConnectionError as err:
                log.warning("redis unreachable (%s); retrying", err)
                await self._pause(0.5)

    async def _choose(self) -> str | None:
        depths = await self.queue.depths(self.experts, self._visibility_ms)
        leased = [keys.lease(e) for e in self.experts if self.manager.launched(e)]
        owners = await self.leases.owners(leased)
        ready = [
            e for e, d in depths.items() if d.pending > 0 and owners.get(keys.lease(e)) in (None, self.id)
        ]
        if not ready:
            return None
        return min(
            ready, key=lambda e: (e not in self.manager.resident, -depths[e].pending, depths[e].oldest_ms)
        )

    async def _serve(self, expert: str) -> None:
        if self.manager.launched(expert):
            if not await self.leases.acquire(keys.lease(expert)):
                return
            try:
                loaded = await self.manager.ensure(expert, self._evict)
            except CoeError as err:  # the server did not start, or its model is missing
                log.error("cannot load %s: %s", expert, err)
                await self._drain(expert, failure=f"cannot load the model: {err}")
                await self.leases.release(keys.lease(expert))  # another worker may manage
                return
            if loaded is not None:
                await self._record_load(expert, loaded)
        await self._drain(expert)

    async def _record_load(self, expert: str, seconds: float) -> None:
        log.info(
            "loaded %s in %.2fs (resident: %s)", expert, seconds, ", ".join(self.manager.resident) or "-"
        )
        stats = keys.expert_stats(expert)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(stats, "loads", 1)
        pipe.hincrbyfloat(stats, "load_s", seconds)
        pipe.hset(stats, "resident_since", f"{time.time():.3f}")
        await pipe.execute()

    async def _evict(self, expert: str) -> None:
        resident = await self.manager.unload(expert)
        log.info("unloaded %s after %.2fs resident", expert, resident)
        stats = keys.expert_stats(expert)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrbyfloat(stats, "resident_s", resident)
        pipe.hdel(stats, "resident_since")
        await pipe.execute()
        await self.leases.release(keys.lease(expert))

    def _may_take(self, expert: str) -> bool:
        if self._stop.is_set() or not self.manager.alive(expert):
            return False
        return not self.manager.launched(expert) or keys.lease(expert) in self.leases.held

    async def _drain(self, expert: str, failure: str | None = None) -> None:
        """Take calls for ``expert`` (its own and those a dead worker left) until none is left."""
        config = self.pool.configs.get(expert)
        slots = 1 if failure else config.max_concurrency if config else 4

        async def slot() -> None:
            while self._may_take(expert):
                messages = await self.queue.reclaim(expert, self.id, self._visibility_ms, 1)
                if not messages:
                    messages = await self.queue.read(expert, self.id, 1, block_ms=100)
                if not messages:
                    return
                for message_id, call in messages:
                    await self._process(expert, message_id, call, failure)

        await asyncio.gather(*(slot() for _ in range(slots)))
        self.manager.touch(expert)

    async def _process(self, expert: str, message_id: str, call: Call, failure: str | None) -> None:
        self._in_flight[expert].add(message_id)
        try:
            if await self.queue.done(call.key):
                await self.queue.ack(message_id, expert)
                return
            skip = await self._skip(call)
            if skip is not None:  # nobody waits for its answer any more
                await self.queue.store(message_id, call, self._outcome(expert, 0, error=skip))
                return
            attempts = await self.queue.attempt(call.key, self.manager.load_id(expert))
            if attempts > self.options.max_attempts:
                error = f"gave up: {attempts - 1} attempts did not finish (their workers died)"
                await self._fail(message_id, call, error, attempts, last=True)
                return
            failed = failure or await self._call(expert, message_id, call, attempts)
            if failed is not None:
                await self._fail(message_id, call, failed, attempts, attempts >= self.options.max_attempts)
        finally:
            self._in_flight[expert].discard(message_id)

    async def _skip(self, call: Call) -> str | None:
        """Why a call should not run: its deadline passed, or its batch was cancelled."""
        if call.expired(time.time()):
            return "expired: its deadline passed before a model could serve it"
        reason: Any = await self.redis.hget(keys.batch(call.key.batch), "cancel")
        return None if reason is None else f"{reason.decode()}: its batch was stopped"

    def _outcome(
        self, expert: str, attempts: int, completion: Completion | None = None, error: str | None = None
    ) -> Outcome:
        served = Outcome(
            worker=self.id,
            load=self.manager.load_id(expert),
            resident=self.manager.max_resident,
            attempts=attempts,
        )
        if completion is None:
            return dataclasses.replace(served, error=error)
        return dataclasses.replace(
            served,
            content=completion.content,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
        )

    async def _call(self, expert: str, message_id: str, call: Call, attempts: int) -> str | None:
        """Run the call and store its result; returns the error if it failed."""
        try:
            completion = await self.pool.server_client(expert).complete(call.request)
        except (ExpertError, UserError) as err:
            if expert in self.manager.resident and not self.manager.alive(expert):
                log.warning("the server of %s died; it will be loaded again", expert)
                await self._evict(expert)
            return str(err)
        outcome = self._outcome(expert, attempts, completion)
        if await self.queue.store(message_id, call, outcome):
            self.calls_done[expert] += 1
        return None

    async def _fail(self, message_id: str, call: Call, error: str, attempts: int, last: bool) -> None:
        expert = call.key.expert
        if not last:
            backoff = min(10.0, self.options.retry_backoff_s * 2 ** (attempts - 1))
            log.warning("call %s failed (attempt %d): %s; retrying", call.key.id, attempts, error)
            await asyncio.sleep(backoff)  # still ours meanwhile: the heartbeat keeps it from others
            await self.queue.requeue(message_id, call)
            return
        log.error("call %s failed %d times; dead-lettered: %s", call.key.id, attempts, error)
        await self.queue.store(message_id, call, self._outcome(expert, attempts, error=error), dead=True)

    async def _heartbeat(self) -> None:
        """Renew leases and keep calls in flight from being reclaimed, until ``_served`` is set."""
        interval = min(self.options.lease_s, self.options.visibility_s) / 3
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._served.wait()
                    return
            try:
                for key in list(self.leases.held):
                    if not await self.leases.renew(key):
                        log.warning("lost lease %s", key)
                for expert, message_ids in list(self._in_flight.items()):
                    await self.queue.touch(expert, self.id, list(message_ids))
            except RedisError as err:
                log.warning("heartbeat failed: %s", err)
