"""The batch driver over recorded outputs of real models (replay experts served through the
queue by an in-process worker): stage-by-stage flushing in a loop graph, restart of a driver on
stored results, and adoption of an orphaned batch by a worker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from batch_support import until
from conftest import REPO

from coe.batch import keys
from coe.batch.adopt import Adopter
from coe.batch.driver import BatchDriver, graph_factory, load_batch_graph
from coe.batch.run import drive
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker, WorkerOptions
from coe.config import Settings
from coe.experts.replay import ReplayBank
from coe.questions.datasets import load_mmlu_pro
from coe.questions.prompts import build_messages
from coe.questions.tokens import TokenCounter

pytestmark = pytest.mark.asyncio(loop_scope="module")
DATA = REPO / "tests" / "data" / "mmlu_pro"
LOOP_GRAPH = """\
description: the first two experts answer, twice (the second round sees the first), then vote
experts: pool
entry: route
exit: answer
nodes:
  route: {kind: route, router: fixed, params: {take: 2}}
  experts: {kind: experts}
  rounds: {kind: stop, max_rounds: 2, next: experts, done: vote}
  vote: {kind: aggregate, aggregator: vote}
  answer: {kind: answer}
edges:
  - [route, experts]
  - [experts, rounds]
  - [vote, answer]
"""


@pytest.fixture(scope="module")
def bank() -> ReplayBank:
    return ReplayBank.load(DATA / "outputs")


@pytest.fixture(scope="module")
def items() -> list[BatchItem]:
    questions = sorted(load_mmlu_pro(DATA / "test_slice.jsonl"), key=lambda q: q.question_id)[:4]
    return [
        BatchItem(
            str(q.question_id),
            list(build_messages(q, (), "cot0")),
            q.answer,
            {"question_id": q.question_id},
        )
        for q in questions
    ]


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    path = tmp_path / "two_rounds.yaml"
    path.write_text(LOOP_GRAPH)
    return path


def replay_worker(redis: aioredis.Redis, settings: Settings, bank: ReplayBank) -> Worker:
    worker = Worker(redis, settings, [], WorkerOptions(poll_s=0.05))
    counter = TokenCounter()
    for name in bank.names:
        worker.add(bank.expert(name, counter))
    return worker


async def test_loop_graph_runs_stage_by_stage(
    redis: aioredis.Redis, settings: Settings, bank: ReplayBank, items: list[BatchItem], graph: Path
) -> None:
    loaded, ref = load_batch_graph(settings, str(graph))
    assert ref == str(graph), "a graph outside graphs/ is kept by its path"
    pool = bank.names
    batch = await BatchStore(redis).create(ref, items, pool=pool)
    driver = BatchDriver(redis, batch, graph_factory(loaded, pool), queued=pool)
    status = await drive(driver, replay_worker(redis, settings, bank))
    assert status["status"] == "done" and status["items"] == {"total": 4, "done": 4, "failed": 0}
    # every item's round-0 calls were queued together, then every item's round-1 calls
    assert driver.dispatcher.flushes == [8, 8]
    assert status["calls"] == {"enqueued": 16, "done": 16, "dead": 0}
    outputs = await BatchStore(redis).outputs(batch)
    for item in items:
        output = outputs[item.id]
        assert sorted(c["expert"] for c in output["trace"]["calls"]) == sorted(pool[:2] * 2)
        assert output["answer"] == item.answer and output["correct"] == (output["prediction"] == item.answer)
        assert output["trace"]["stops"][-1]["reason"] == "reached max_rounds=2"
    stored = {k.decode() async for k in redis.scan_iter(f"coe:result:{batch}:*")}
    stages = {key.split(":")[4] for key in stored}
    assert len(stored) == 16 and stages == {"experts#0", "experts#1"}

    # A new driver of the same batch (its outputs lost) finds every result stored: nothing re-runs.
    await redis.delete(keys.batch(batch, "outputs"))
    await redis.hset(keys.batch(batch, "stats"), mapping={"items_done": 0})
    again = BatchDriver(redis, batch, graph_factory(loaded, pool), queued=pool)
    second = await drive(again)  # no worker at all
    assert again.dispatcher.flushes == [0, 0]
    assert second["items"]["done"] == 4 and second["calls"]["done"] == 16
    rerun = await BatchStore(redis).outputs(batch)
    assert {k: v["content"] for k, v in rerun.items()} == {k: v["content"] for k, v in outputs.items()}
    assert all(v["trace"]["usage"] == outputs[k]["trace"]["usage"] for k, v in rerun.items())


async def test_a_worker_adopts_an_orphaned_batch(
    redis: aioredis.Redis, settings: Settings, bank: ReplayBank, items: list[BatchItem], graph: Path
) -> None:
    _, ref = load_batch_graph(settings, str(graph))
    store = BatchStore(redis)
    batch = await store.create(ref, items[:2], pool=bank.names)  # submitted, then its driver died
    assert batch.encode() in await redis.smembers(keys.BATCHES)
    worker = replay_worker(redis, settings, bank)
    serving = asyncio.create_task(worker.run())
    adopter = asyncio.create_task(Adopter(redis, settings, bank.names, interval_s=0.1).run())

    async def finished() -> bool:
        return bool((await store.meta(batch))["status"] == "done")

    try:
        await until(finished, timeout_s=60)
    finally:
        adopter.cancel()
        worker.stop()
        await asyncio.gather(adopter, serving, return_exceptions=True)
    outputs = await store.outputs(batch)
    assert sorted(outputs) == sorted(i.id for i in items[:2])
    assert all(json.dumps(o).count('"expert"') >= 4 for o in outputs.values())
    assert batch.encode() not in await redis.smembers(keys.BATCHES)
