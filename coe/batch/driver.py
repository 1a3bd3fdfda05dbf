"""The scheduler of one batch: every item through the graph, expert calls through the queue.

The driver runs the same compiled graph nodes as online serving, with the direct executor and a
``QueuedLookup`` (``coe.batch.dispatch``), so routing, judging and aggregation are the graph's own
code. It holds the batch's driver lease while it runs; if it dies, another driver (a ``coe worker``
when the batch is adoptable) takes the batch over, and results already stored are reused because
call ids are deterministic. Item outputs are written once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from coe.batch import keys
from coe.batch.dispatch import Dispatcher, QueuedLookup, StagedNode
from coe.batch.lease import Leases
from coe.batch.queue import CallQueue
from coe.batch.status import batch_status
from coe.batch.store import BatchItem, BatchStore
from coe.config import Settings
from coe.errors import CoeError, UpstreamError, UserError
from coe.graph.catalog import resolve
from coe.graph.compile import GraphPipeline
from coe.graph.loader import LoadedGraph, load_graph
from coe.graph.nodes.base import ExpertLookup
from coe.pipeline import RunParams
from coe.questions.extract import extract_choice

log = logging.getLogger("coe.batch")

PipelineFactory = Callable[[ExpertLookup], GraphPipeline]
OutputHook = Callable[[BatchItem, dict[str, Any]], None]


def owner_id(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def load_batch_graph(settings: Settings, graph: str) -> tuple[LoadedGraph, str]:
    """The graph and how to name it in the batch: its name, or its absolute path if outside graphs/."""
    path = resolve(graph, settings.graphs_dir)
    loaded = load_graph(path, graphs_dir=settings.graphs_dir)
    named = (settings.graphs_dir / f"{loaded.name}.yaml").resolve() == path.resolve()
    return loaded, loaded.name if named else str(Path(path).resolve())


def graph_factory(loaded: LoadedGraph, pool: Sequence[str]) -> PipelineFactory:
    return lambda lookup: GraphPipeline(loaded, lookup, list(pool), engine="direct")


def item_output(
    item: BatchItem, content: str, trace: dict[str, Any], finish_reason: str = "stop"
) -> dict[str, Any]:
    output: dict[str, Any] = {"id": item.id, "content": content, "finish_reason": finish_reason}
    if item.answer is not None:
        prediction = extract_choice(content)
        output.update(prediction=prediction, answer=item.answer, correct=prediction == item.answer)
    output["trace"] = trace
    return output


class _Cancelled(Exception):
    """The batch's cancellation was asked for: its drive ends."""


class BatchDriver:
    def __init__(
        self,
        redis: aioredis.Redis,
        batch_id: str,
        build: PipelineFactory,
        *,
        queued: Collection[str],
        direct: ExpertLookup | None = None,
        lease_s: float = 30.0,
        stall_s: float = 30.0,
        on_output: OutputHook | None = None,
    ) -> None:
        self.redis = redis
        self.batch_id = batch_id
        self.build = build
        self.queued = queued
        self.direct = direct
        self.lease_s = lease_s
        self.stall_s = stall_s
        self.on_output = on_output
        self.store = BatchStore(redis)
        self.dispatcher = Dispatcher(CallQueue(redis), batch_id, stall_s=stall_s)

    async def run(self) -> dict[str, Any]:
        """Drive the batch to the end; returns its status."""
        leases = Leases(self.redis, owner_id("driver"), self.lease_s)
        lease = keys.driver_lease(self.batch_id)
        if not await leases.acquire(lease):
            raise UserError(f"batch {self.batch_id} is being driven by {await leases.owner_of(lease)}")
        drive = asyncio.create_task(self._drive())
        keeper = asyncio.create_task(self._keep(leases, lease, drive))
        try:
            await asyncio.wait({drive, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if not drive.done():
                drive.cancel()
                await asyncio.gather(drive, return_exceptions=True)
                if not isinstance(keeper.exception(), _Cancelled):
                    raise UpstreamError(f"lost the driver lease of batch {self.batch_id}")
            else:
                drive.result()
        finally:
            for task in (drive, keeper):
                task.cancel()
            await asyncio.gather(drive, keeper, return_exceptions=True)
            await leases.release(lease)
        return await batch_status(self.redis, self.batch_id)

    async def _keep(self, leases: Leases, lease: str, drive: asyncio.Task[None]) -> None:
        """Renew the driver lease while ``drive`` runs; return (ending the drive) when someone else
        holds it, or end the batch as ``cancelled`` when its cancellation was asked for. Ending
        with the drive, not only by cancellation, keeps a cancellation swallowed mid-command from
        leaving the keeper running."""
        while not drive.done():
            await asyncio.sleep(min(self.lease_s / 3, 1.0))
            try:
                if await self.store.cancelled(self.batch_id):
                    log.info("batch %s: cancelled", self.batch_id)
                    await self.store.finish(self.batch_id, "cancelled")
                    raise _Cancelled
                if not await leases.renew(lease):
                    return
            except RedisConnectionError as err:
                log.warning("batch %s: cannot renew driver lease: %s", self.batch_id, err)

    async def _drive(self) -> None:
        meta = await self.store.meta(self.batch_id)
        done = await self.store.outputs(self.batch_id)
        todo = [item for item in await self.store.items(self.batch_id) if item.id not in done]
        pipeline = self.build(QueuedLookup(self.dispatcher, self.queued, self.direct))
        if pipeline.direct is None:
            raise CoeError("batch pipelines run on the direct executor")
        pipeline.direct.nodes = {name: StagedNode(node) for name, node in pipeline.direct.nodes.items()}
        log.info("batch %s: %d items to run (%d done before)", self.batch_id, len(todo), len(done))
        self.dispatcher.expect(item.id for item in todo)
        flusher = asyncio.create_task(self.dispatcher.run())
        run = functools.partial(self._item, pipeline, meta["max_tokens"])
        items: asyncio.Future[list[None]] = asyncio.gather(
            *(self.dispatcher.run_item(item.id, functools.partial(run, item)) for item in todo)
        )
        both: set[asyncio.Future[Any]] = {items, flusher}
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            if not items.done():
                flusher.result()  # the dispatcher only stops by failing: raise its error
            items.result()
        finally:
            items.cancel()
            flusher.cancel()
            await asyncio.gather(items, flusher, return_exceptions=True)
        await self.store.finish(self.batch_id)

    async def _item(self, pipeline: GraphPipeline, max_tokens: int | None, item: BatchItem) -> None:
        own = item.params
        params = RunParams(
            max_tokens=own.get("max_tokens") or max_tokens,
            temperature=own.get("temperature"),
            stop=tuple(own.get("stop") or ()),
            metadata=dict(item.metadata),
            sampling=dict(own.get("sampling") or {}),
        )
        try:
            result = await pipeline.run(item.messages, params)
            output = item_output(item, result.content, result.trace.as_dict(), result.finish_reason)
        except CoeError as err:
            if await self.store.cancelled(self.batch_id):
                return  # stopped, not failed: the item stays unanswered
            output = {"id": item.id, "content": None, "error": str(err), "trace": None}
        await self.store.put_output(self.batch_id, output)
        if self.on_output is not None:
            self.on_output(item, output)
