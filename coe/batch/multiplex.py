"""Online multiplexing: ``coe serve`` hosting more experts than its memory budget holds.

Symbolic-MoE's batching (group work by expert, load each model once) applied to live traffic.
With ``serve_memory_budget_bytes`` set, every call to an expert whose server coe launches goes on
that expert's Redis Stream (the batch queue: same consumer group, same at-least-once delivery and
store-once results) and waits there. One model manager, the ``Multiplexer`` (a batch ``Worker``
sharing the API's ``ExpertPool``, so that the API and a worker never both own one model server),
serves the streams:

- every resident expert has a drainer: as many slots as the expert has ``max_concurrency``, each
  taking the next call off the stream. An online call taken this way is handed back to the request
  that made it, which then streams the answer from the model server token by token; a batch call
  (a ``coe batch`` or Batch API item) is answered by the slot itself;
- a scheduler picks the next model to load among experts with waiting calls: the one with the
  most waiting, the oldest call first on ties. It swaps it in as soon as the resident experts it
  must unload are idle (their queue drained, including calls that arrived while they were
  resident, and no call in flight). A call that has waited ``serve_max_wait_s`` makes its expert
  the next one loaded even though the resident ones still have work, once they have had a turn
  of ``serve_max_wait_s`` since their own load: they stop taking calls, finish those in flight
  and are unloaded. So no expert starves: a call waits at most about ``serve_max_wait_s`` (the
  resident model's turn), plus the calls in flight on the models being unloaded, plus its own
  model's load time; with several experts overdue at once, one such turn per expert ahead of it,
  oldest call first. A larger ``serve_max_wait_s`` means fewer loads, a smaller one shorter waits;
- an idle resident model that took a call within the last three load times of the model that
  would replace it (at most ``serve_max_wait_s`` / 3) is not swapped out yet: its calls are likely
  to go on coming, and swapping now would soon cost a load to bring it back (anticipatory
  scheduling; the bound above still holds, an overdue call ends the wait).

Expert leases keep the API and ``coe worker`` processes (on this machine or others) from loading
the same model: a worker may take any stream whose expert the API does not hold. An online call a
worker answered reaches its request in one piece (through the result key and notification list),
not token by token. An online call carries a deadline (``request_timeout_s``): past it, or when
its request has gone away, whoever takes it acknowledges it without running it.

Without a budget every expert stays resident and online calls go to the servers directly; the
multiplexer then only serves batch calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from coe.batch import keys
from coe.batch.calls import Call, CallKey, Outcome
from coe.batch.manager import model_bytes
from coe.batch.online import MultiplexedExpert, Waiter, Waits
from coe.batch.worker import Worker, WorkerOptions
from coe.config import Settings
from coe.errors import CoeError, ExpertError
from coe.experts.pool import ExpertPool
from coe.types import ExpertRequest

log = logging.getLogger("coe.multiplex")


class Multiplexer(Worker):
    """The model manager of ``coe serve`` (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        pool: ExpertPool,
        options: WorkerOptions | None = None,
    ) -> None:
        options = options or WorkerOptions(
            budget_bytes=settings.serve_memory_budget_bytes,
            lease_s=settings.batch_lease_s,
            visibility_s=settings.batch_visibility_timeout_s,
            max_attempts=settings.batch_max_attempts,
            poll_s=0.1,
        )
        super().__init__(redis, settings, list(pool.configs.values()), options, pool=pool)
        self.id = self.id.replace("worker:", "serve:", 1)
        self.manager.owner = self.id
        self.leases.owner = self.id
        self.online = f"online-{uuid.uuid4().hex[:12]}"  # the pseudo-batch of this process's calls
        self.multiplexed = options.budget_bytes is not None
        self.max_wait_s = settings.serve_max_wait_s
        self.waits: dict[str, Waits] = {}
        self._waiters: dict[str, Waiter] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._closing: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded_at: dict[str, float] = {}  # expert -> when its current load finished
        self._load_took: dict[str, float] = {}  # expert -> how long its last load took
        self._used_at: dict[str, float] = {}  # expert -> when it last took a call

    # --- start and stop --------------------------------------------------------------------------

    def initial(self) -> list[str]:
        """The launched experts that fit the budget together, in config order (all without one)."""
        launched = [n for n in self.experts if self.manager.launched(n)]
        budget = self.options.budget_bytes
        if budget is None:
            return launched
        chosen: list[str] = []
        used = 0
        for name in launched:
            size = self.manager.sizes.get(name, 0)
            if not chosen or used + size <= budget:
                chosen.append(name)
                used += size
        return chosen

    async def prepare(self) -> list[str]:
        """Measure the models, take the leases of those to load first; returns their names."""
        for name, config in self.pool.configs.items():
            if self.manager.launched(name):
                self.manager.sizes[name] = await asyncio.to_thread(model_bytes, config, self.settings)
        await self.queue.ensure_groups(self.experts)
        first = self.initial()
        mine = [n for n in first if await self.leases.acquire(keys.lease(n))]
        for name, config in self.pool.configs.items():  # sleep-mode servers of their own:
            if config.sleep_mode and config.endpoint and name not in first:  # the others sleep
                await self.manager.sleep(name)
        # with a budget every managed expert is reached through its stream; without one, only
        # those whose lease another process holds (it serves them)
        queued = [n for n in self.experts if self.manager.launched(n) and (self.multiplexed or n not in mine)]
        self.pool.front.update({n: MultiplexedExpert(n, self) for n in queued})
        self.pool.extra_stats = self._expert_stats
        return mine

    async def adopt(self, names: list[str]) -> None:
        """Count servers the pool has just started as loaded by this manager, and serve them."""
        for name in names:
            launcher = self.pool.launchers.get(name)
            load_s = launcher.stats.load_s if launcher is not None else 0.0
            if launcher is None:  # a sleep-mode server of its own: it may sleep since a last run
                began = time.monotonic()
                await self.manager.wake(name)
                load_s = time.monotonic() - began
            self.manager.resident[name] = self._loaded_at[name] = time.monotonic()
            self._load_took[name] = load_s
            self.manager.loads[name] = self.manager.loads.get(name, 0) + 1
            self.manager.events.append((time.time(), "load", name))
            await self._record_load(name, load_s)
        self.manager.max_resident = max(self.manager.max_resident, len(self.manager.resident))
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="coe-mux-schedule"),
            asyncio.create_task(self._heartbeat(), name="coe-mux-heartbeat"),
            asyncio.create_task(self._listen(), name="coe-mux-listen"),
        ]

    async def close(self) -> None:
        """Stop taking calls, finish those in flight, unload the models, release the leases."""
        self.stop()
        self._wake.set()
        tasks = [*self._tasks, *self._drainers.values()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_grace_s + 5):
                await asyncio.gather(*self._drainers.values(), return_exceptions=True)
        self._served.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiter in self._waiters.values():
            if not waiter.turn.done():
                waiter.turn.set_exception(ExpertError(waiter.call.key.expert, "the server is shutting down"))
        for name in list(self.manager.resident):
            with contextlib.suppress(RedisConnectionError, CoeError):
                await self._evict(name)
        for key in list(self.leases.held):
            with contextlib.suppress(RedisConnectionError):
                await self.leases.release(key)
        with contextlib.suppress(RedisConnectionError):
            leftovers = [k async for k in self.redis.scan_iter(keys.batch(self.online) + "*")]
            if leftovers:
                await self.redis.delete(*leftovers)

    # --- online calls ----------------------------------------------------------------------------

    async def enqueue(self, expert: str, request: ExpertRequest) -> Waiter:
        key = CallKey(self.online, uuid.uuid4().hex, "online", expert)
        call = Call(key, request, deadline=time.time() + self.settings.request_timeout_s)
        waiter = Waiter(call)
        self._waiters[key.id] = waiter
        await self.queue.push(call)
        self._wake.set()
        return waiter

    def forget(self, waiter: Waiter) -> None:
        waiter.finish(Outcome(error="the request went away"))
        if not waiter.turn.done():
            waiter.turn.cancel()
        self._waiters.pop(waiter.call.key.id, None)

    async def _call(self, expert: str, message_id: str, call: Call, attempts: int) -> str | None:
        if call.key.batch != self.online:
            return await super()._call(expert, message_id, call, attempts)
        waiter = self._waiters.get(call.key.id)
        outcome = Outcome(error="the request went away")
        if waiter is not None and not waiter.turn.done():
            self.waits.setdefault(expert, Waits()).add(time.monotonic() - waiter.enqueued)
            waiter.turn.set_result(None)
            outcome = await waiter.done  # the request streams from the model server meanwhile
        served = self._outcome(expert, attempts)
        outcome = Outcome(
            outcome.content,
            outcome.usage,
            outcome.finish_reason,
            outcome.error,
            served.worker,
            served.load,
            served.resident,
            attempts,
        )
        await self.queue.store(message_id, call, outcome)
        await self.redis.expire(keys.result(call.key.id), 600)
        return None

    async def _listen(self) -> None:
        """Resolve online calls that a worker elsewhere answered, until serving has ended."""
        while not self._served.is_set():
            try:
                ids = await self.queue.notifications(self.online, timeout_s=1.0)
                outcomes = await self.queue.results(ids)
                for call_id, outcome in outcomes.items():
                    waiter = self._waiters.get(call_id)
                    if waiter is not None and not waiter.turn.done():
                        self.waits.setdefault(waiter.call.key.expert, Waits()).add(
                            time.monotonic() - waiter.enqueued
                        )
                        waiter.turn.set_result(outcome)
                if ids:
                    pipe = self.redis.pipeline(transaction=False)
                    for call_id in ids:
                        pipe.expire(keys.result(call_id), 600)
                    await pipe.execute()
            except RedisConnectionError as err:
                log.warning("redis unreachable (%s); retrying", err)
                await asyncio.sleep(0.5)

    def _expert_stats(self, name: str) -> dict[str, Any]:
        waits = self.waits.get(name, Waits())
        return {
            "waiting": sum(
                1 for w in self._waiters.values() if w.call.key.expert == name and not w.turn.done()
            ),
            "waited_calls": waits.calls,
            "max_wait_s": round(waits.max_s, 3),
            "resident_models": len(self.manager.resident),
            "max_resident_models": self.manager.max_resident,
        }

    # --- draining --------------------------------------------------------------------------------

    def _may_take(self, expert: str) -> bool:
        return expert not in self._closing and super()._may_take(expert)

    def _servable(self, expert: str) -> bool:
        return not self.manager.launched(expert) or (
            expert in self.manager.resident and self.manager.alive(expert)
        )

    def _keep_draining(self) -> None:
        for expert in self.experts:
            running = self._drainers.get(expert)
            if (running is None or running.done()) and self._servable(expert) and self._may_take(expert):
                self._drainers[expert] = asyncio.create_task(self._drainer(expert), name=f"coe-mux-{expert}")

    async def _drainer(self, expert: str) -> None:
        config = self.pool.configs.get(expert)
        slots = config.max_concurrency if config else 4

        async def slot() -> None:
            while self._may_take(expert):
                try:
                    messages = await self.queue.reclaim(expert, self.id, self._visibility_ms, 1)
                    if not messages:
                        messages = await self.queue.read(expert, self.id, 1, block_ms=250)
                    for message_id, call in messages:
                        await self._process(expert, message_id, call, None)
                        self.manager.touch(expert)
                        self._used_at[expert] = time.monotonic()
                except RedisConnectionError as err:
                    log.warning("redis unreachable (%s); retrying", err)
                    await self._pause(0.5)

        await asyncio.gather(*(slot() for _ in range(slots)))

    # --- choosing what to load -------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._keep_draining()
                await self._schedule()
            except RedisConnectionError as err:
                log.warning("redis unreachable (%s); retrying", err)
            except CoeError as err:
                log.error("multiplexer: %s", err)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_s):
                    await self._wake.wait()

    def _busy(self, expert: str, pending: int) -> bool:
        return pending > 0 or bool(self._in_flight.get(expert))

    async def _schedule(self) -> None:
        # A resident expert whose server died stays resident: the pool relaunches it (and counts
        # the restart), and its drainer takes calls again once it is back.
        launched = [e for e in self.experts if self.manager.launched(e)]
        others = [e for e in launched if e not in self.manager.resident]
        if not others:
            return
        depths = await self.queue.depths(launched, self._visibility_ms)
        owners = await self.leases.owners([keys.lease(e) for e in others])
        waiting = [
            e
            for e in others
            if e in depths and depths[e].pending > 0 and owners.get(keys.lease(e)) in (None, self.id)
        ]
        if not waiting:
            return
        now_ms = time.time() * 1000
        overdue = [e for e in waiting if now_ms - depths[e].oldest_ms >= self.max_wait_s * 1000]
        if overdue:
            target = min(overdue, key=lambda e: depths[e].oldest_ms)
        else:
            target = min(waiting, key=lambda e: (-depths[e].pending, depths[e].oldest_ms))
        victims = self._victims(target, {e: d.pending for e, d in depths.items()})
        busy = [v for v in victims if self._busy(v, depths[v].pending if v in depths else 0)]
        if busy and not overdue:
            return  # the resident models still have work: drain it first
        turn = min((time.monotonic() - self._loaded_at.get(v, 0.0) for v in busy), default=self.max_wait_s)
        if turn < self.max_wait_s:
            return  # a model just loaded keeps its turn (serve_max_wait_s) before it is preempted
        if not overdue and self._anticipating(target, victims):
            return
        await self._swap(target, victims, overdue=bool(overdue))

    def _anticipating(self, target: str, victims: list[str]) -> bool:
        """True while an idle model to unload took a call within the last three load times of
        ``target`` (at most serve_max_wait_s / 3): its calls are likely to go on coming, and a
        swap now would soon cost a load to bring it back (anticipatory scheduling)."""
        hold = min(self.max_wait_s / 3, 3 * self._load_took.get(target, 1.0))
        now = time.monotonic()
        return any(now - self._used_at.get(v, -hold) < hold for v in victims)

    def _victims(self, target: str, pending: dict[str, int]) -> list[str]:
        """Resident experts to unload so that ``target`` fits: idle ones first, then least recently used."""
        budget = self.options.budget_bytes
        if budget is None:
            return []
        sizes = self.manager.sizes
        order = sorted(self.manager.resident, key=lambda e: self._busy(e, pending.get(e, 0)))
        victims: list[str] = []
        while order and sum(sizes[e] for e in order) + sizes[target] > budget:
            victims.append(order.pop(0))
        return victims

    async def _swap(self, target: str, victims: list[str], overdue: bool) -> None:
        if not await self.leases.acquire(keys.lease(target)):
            return
        if victims:
            log.info(
                "swapping %s for %s%s", ", ".join(victims), target, " (overdue calls)" if overdue else ""
            )
        self._closing.update(victims)
        try:
            drainers = [self._drainers[v] for v in victims if v in self._drainers]
            await asyncio.gather(*drainers, return_exceptions=True)  # calls in flight finish
            for victim in victims:
                await self._evict(victim)
        finally:
            self._closing.difference_update(victims)
        try:
            loaded = await self.manager.ensure(target, self._evict)
        except CoeError as err:
            log.error("cannot load %s: %s", target, err)
            await self._drain(target, failure=f"cannot load the model: {err}")
            await self.leases.release(keys.lease(target))
            return
        if loaded is not None:
            await self._record_load(target, loaded)
            self._load_took[target] = loaded
        self._loaded_at[target] = time.monotonic()
        self._keep_draining()
