"""The driver's side of the queue: expert clients that enqueue their call and wait for its result,
behind a barrier that releases a whole stage at once.

Every item of a batch runs through the graph as its own task. When a node calls an expert, the
call is held back; once no item is computing any more (each is waiting on calls or finished) and
no earlier call is still out, all held calls are enqueued in one pipeline. So routing finishes for
every item before any expert is called, and a judge or aggregation stage is enqueued only when the
stage before it is done for all items: workers see whole stages, not a trickle.

A call's stage is the node that made it plus the loop round (``experts#0``, ``judge#1``), set by
wrapping each node in ``StagedNode``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

from coe.batch.calls import Call, CallKey, Outcome
from coe.batch.queue import CallQueue
from coe.errors import CoeError, UserError
from coe.experts.base import Emit, ExpertClient
from coe.graph.nodes.base import ExpertLookup, NodeKind
from coe.graph.state import GraphState
from coe.types import Chunk, ExpertRequest

log = logging.getLogger("coe.batch")
T = TypeVar("T")


@dataclass(slots=True)
class _ItemScope:
    item: str
    samples: Counter[tuple[str, str]] = field(default_factory=Counter)

    def next_sample(self, stage: str, expert: str) -> int:
        sample = self.samples[stage, expert]
        self.samples[stage, expert] += 1
        return sample


_ITEM: ContextVar[_ItemScope] = ContextVar("coe_batch_item")
_STAGE: ContextVar[str] = ContextVar("coe_batch_stage", default="call")


class StagedNode(NodeKind):
    """A graph node whose expert calls belong to the stage ``<node>#<round>``."""

    def __init__(self, inner: NodeKind) -> None:
        super().__init__(inner.name, inner.params, inner.context)
        self.inner = inner

    def _round(self, state: GraphState) -> int:
        """The node's loop round: ``NodeKind.round`` where the graph runtime has it."""
        rounds = getattr(self.inner, "round", None)
        if callable(rounds):
            return int(rounds(state))
        legacy: Any = state.get("round", 0)  # type: ignore[call-overload, unused-ignore]
        return int(legacy)

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        token = _STAGE.set(f"{self.name}#{self._round(state)}")
        try:
            return await self.inner(state, emit)
        finally:
            _STAGE.reset(token)


class Dispatcher:
    """Holds calls until the barrier opens, enqueues them, and resolves them as results arrive."""

    def __init__(
        self,
        queue: CallQueue,
        batch_id: str,
        *,
        settle_rounds: int = 5,
        stall_s: float = 30.0,
        reconcile_s: float = 5.0,
    ) -> None:
        self.queue = queue
        self.batch_id = batch_id
        self.settle_rounds = settle_rounds
        self.stall_s = stall_s
        self.reconcile_s = reconcile_s
        self.flushes: list[int] = []  # calls enqueued by each flush, in order
        self._active: set[str] = set()
        self._blocked: set[str] = set()
        self._waiting: dict[str, tuple[Call, asyncio.Future[Outcome]]] = {}
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}
        self._changed = asyncio.Event()

    def expect(self, item_ids: Iterable[str]) -> None:
        """Count these items as computing from now on, before their tasks start."""
        self._active.update(item_ids)

    async def run_item(self, item_id: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run one item's work (in its own task) so that its expert calls are attributed to it."""
        self._active.add(item_id)
        _ITEM.set(_ItemScope(item_id))
        try:
            return await work()
        finally:
            self._active.discard(item_id)
            self._blocked.discard(item_id)
            self._changed.set()

    async def call(self, expert: str, request: ExpertRequest) -> Outcome:
        try:
            scope = _ITEM.get()
        except LookupError:
            raise CoeError("a queued expert was called outside a batch item") from None
        stage = _STAGE.get()
        key = CallKey(self.batch_id, scope.item, stage, expert, scope.next_sample(stage, expert))
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[key.id] = (Call(key, request), future)
        self._blocked.add(scope.item)
        self._changed.set()
        return await future

    def _ready(self) -> bool:
        return bool(self._waiting) and not self._in_flight and self._active <= self._blocked

    async def run(self) -> None:
        """Flush stages and collect results until cancelled; raises if either side fails."""
        tasks = [asyncio.create_task(self._flush_loop()), asyncio.create_task(self._listen())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _flush_loop(self) -> None:
        while True:
            try:
                # not asyncio.wait_for: on 3.11 it can swallow a cancellation (gh-86296)
                async with asyncio.timeout(self.stall_s):
                    await self._changed.wait()
            except TimeoutError:
                if self._waiting and not self._in_flight:
                    log.warning("batch %s: stalled; enqueuing the calls held back", self.batch_id)
                    await self._flush()
                continue
            self._changed.clear()
            if self._ready():
                for _ in range(self.settle_rounds):  # let sibling calls of a fan-out arrive
                    await asyncio.sleep(0)
                if self._ready():
                    await self._flush()

    async def _flush(self) -> None:
        waiting, self._waiting = self._waiting, {}
        self._blocked.clear()
        stored = await self.queue.results(list(waiting))
        new = []
        for call_id, (call, future) in waiting.items():
            if call_id in stored:
                future.set_result(stored[call_id])
            else:
                self._in_flight[call_id] = future
                new.append(call)
        if new:
            await self.queue.enqueue(new)
        self.flushes.append(len(new))
        log.debug("batch %s: enqueued %d calls (%d already stored)", self.batch_id, len(new), len(stored))
        if stored:
            self._changed.set()

    async def _listen(self) -> None:
        heard = reconciled = time.monotonic()
        while True:
            try:
                ids = await self.queue.notifications(self.batch_id, timeout_s=1.0)
                now = time.monotonic()
                heard = now if ids else heard
                if min(now - heard, now - reconciled) > self.reconcile_s:
                    ids.extend(self._in_flight)  # quiet for a while: look at every result we wait for
                    reconciled = now
                await self._resolve([i for i in dict.fromkeys(ids) if i in self._in_flight])
            except RedisConnectionError as err:
                log.warning("batch %s: redis unreachable (%s); retrying", self.batch_id, err)
                await asyncio.sleep(0.5)

    async def _resolve(self, call_ids: list[str]) -> None:
        outcomes = await self.queue.results(call_ids)
        for call_id, outcome in outcomes.items():
            future = self._in_flight.pop(call_id, None)
            if future is not None and not future.done():
                future.set_result(outcome)
        if outcomes:
            self._changed.set()


class QueuedExpert(ExpertClient):
    """An expert reached through its Redis stream: a call is enqueued and its result awaited, then
    given as one chunk."""

    def __init__(self, name: str, dispatcher: Dispatcher) -> None:
        self.name = name
        self.dispatcher = dispatcher

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        outcome = await self.dispatcher.call(self.name, request)
        completion = outcome.completion(self.name)
        yield Chunk(completion.content, completion.usage, completion.finish_reason)


class QueuedLookup:
    """Queued clients for the experts workers serve; ``direct`` for the rest (replayed experts)."""

    def __init__(
        self, dispatcher: Dispatcher, queued: Collection[str], direct: ExpertLookup | None = None
    ) -> None:
        self.queued = set(queued)
        self.direct = direct
        self._clients = {name: QueuedExpert(name, dispatcher) for name in self.queued}

    def client(self, name: str) -> ExpertClient:
        if name in self._clients:
            return self._clients[name]
        if self.direct is None:
            raise UserError(f"unknown expert {name!r}")
        return self.direct.client(name)
