"""Running a batch from one process: its driver, plus an in-process worker when Redis is local."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coe.batch.connect import batch_redis
from coe.batch.driver import BatchDriver, graph_factory, load_batch_graph
from coe.batch.status import batch_status
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker
from coe.config import ExpertConfig, Settings, load_experts
from coe.errors import CoeError, UserError
from coe.graph.loader import LoadedGraph


async def drive(driver: BatchDriver, worker: Worker | None = None) -> dict[str, Any]:
    """Drive a batch to its end, with ``worker`` serving its calls meanwhile; returns the status."""
    if worker is None:
        return await driver.run()
    serving = asyncio.create_task(worker.run())
    driving = asyncio.create_task(driver.run())
    try:
        await asyncio.wait({serving, driving}, return_when=asyncio.FIRST_COMPLETED)
        if not driving.done():
            serving.result()  # the worker failed: raise its error
            raise CoeError("the in-process worker stopped before the batch was done")
        return driving.result()
    finally:
        worker.stop()
        driving.cancel()
        await asyncio.gather(driving, return_exceptions=True)
        await asyncio.gather(serving, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Plan:
    loaded: LoadedGraph
    graph_ref: str
    pool: list[str]
    configs: list[ExpertConfig]


def plan(settings: Settings, graph: str, experts: Sequence[str] = ()) -> Plan:
    """Check a batch before submitting it: its graph loads and every expert it needs is configured."""
    configs = {c.name: c for c in load_experts(settings.experts_file)}
    loaded, ref = load_batch_graph(settings, graph)
    spec_pool = loaded.spec.experts
    pool = list(experts) or (list(spec_pool) if isinstance(spec_pool, list) else list(configs))
    missing = {name for _, name in loaded.missing_experts(configs)} | {n for n in pool if n not in configs}
    if missing:
        raise UserError(f"graph {loaded.name}: expert(s) not configured: {', '.join(sorted(missing))}")
    return Plan(loaded, ref, pool, list(configs.values()))


async def submit_batch(
    settings: Settings,
    items: Sequence[BatchItem],
    graph: str,
    *,
    experts: Sequence[str] = (),
    max_tokens: int | None = None,
    detach: bool = False,
    announce: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Submit a batch and (unless ``detach``) drive it to its end; returns its final status."""
    checked = plan(settings, graph, experts)
    if detach and settings.redis_url is None:
        raise UserError("--detach needs REDIS_URL: with a local Redis no worker would see the batch")
    async with batch_redis(settings) as (redis, local):
        store = BatchStore(redis)
        batch_id = await store.create(checked.graph_ref, items, pool=checked.pool, max_tokens=max_tokens)
        announce(batch_id)
        if detach:
            return None
        driver = BatchDriver(
            redis,
            batch_id,
            graph_factory(checked.loaded, checked.pool),
            queued=[c.name for c in checked.configs],
            lease_s=settings.batch_lease_s,
        )
        worker = Worker(redis, settings, checked.configs) if local else None
        return await drive(driver, worker)


async def read_batch(settings: Settings, batch_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A batch's status and the outputs of its finished items, in input order."""
    async with batch_redis(settings) as (redis, _):
        status = await batch_status(redis, batch_id)
        store = BatchStore(redis)
        outputs = await store.outputs(batch_id)
        order = [item.id for item in await store.items(batch_id)]
    return status, [outputs[i] for i in order if i in outputs]
