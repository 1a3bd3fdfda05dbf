"""Faults with real processes: a ``coe worker`` SIGKILLed mid-batch, redis-server SIGKILLed and
restarted on its data, and an expert server that dies mid-call. Nothing is lost or stored twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from batch_support import outcomes, until
from conftest import MODEL_CACHE, REPO, clean_env, descendants, wait_gone, write_settings

from coe.batch import keys
from coe.batch.connect import connect
from coe.batch.driver import BatchDriver, graph_factory, load_batch_graph
from coe.batch.queue import CallQueue
from coe.batch.run import drive
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker
from coe.config import Settings, load_experts
from coe.experts.launch import LlamaCppServer, free_port
from coe.experts.models import resolve_model
from coe.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="module")
FAST = {"batch_lease_s": 2, "batch_visibility_timeout_s": 3, "batch_memory_budget_bytes": 1}


def items(n: int) -> list[BatchItem]:
    return [
        BatchItem(f"q{i}", [{"role": "user", "content": f"Count from {i} to {i + 20}, one number a line."}])
        for i in range(n)
    ]


async def submit(redis: aioredis.Redis, settings: Settings, n: int, max_tokens: int) -> BatchDriver:
    loaded, ref = load_batch_graph(settings, "single")
    pool = [c.name for c in load_experts(settings.experts_file)]
    batch = await BatchStore(redis).create(ref, items(n), pool=pool, max_tokens=max_tokens, adoptable=False)
    return BatchDriver(redis, batch, graph_factory(loaded, pool), queued=pool, lease_s=settings.batch_lease_s)


def start_worker(config: Path, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "coe", "worker", "--config", str(config), "--no-adopt"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_env(), "REDIS_URL": redis_url},
            cwd=REPO,
        )


async def test_sigkill_a_worker_mid_batch(redis: aioredis.Redis, redis_server: str, tmp_path: Path) -> None:
    """Two ``coe worker`` processes; the one holding the expert's lease is SIGKILLed mid-call. The
    other did not load the model meanwhile; it takes the lease over, reclaims the call and ends
    the batch, and every call is stored exactly once."""
    config = write_settings(tmp_path, **FAST)
    driver = await submit(redis, Settings.load(config), n=4, max_tokens=16)
    batch = driver.batch_id
    await CallQueue(redis).ensure_groups(["smollm2"])
    driving = asyncio.create_task(driver.run())
    workers = {}
    for name in ("a", "b"):
        proc = start_worker(config, redis_server, tmp_path / f"worker-{name}.log")
        workers[proc.pid] = (proc, tmp_path / f"worker-{name}.log")
    try:

        async def holder_mid_batch() -> int | None:
            done = int(await redis.hget(keys.batch(batch, "stats"), "done:smollm2") or 0)
            owner = (await redis.get(keys.lease("smollm2")) or b"").decode()  # worker:HOST:PID:RANDOM
            held = await redis.xpending_range(keys.stream("smollm2"), keys.GROUP, "-", "+", 100)
            busy = done >= 1 and any(e["consumer"].decode() == owner for e in held)
            return int(owner.split(":")[2]) if busy else None

        await until(holder_mid_batch)
        victim = workers[int((await redis.get(keys.lease("smollm2"))).decode().split(":")[2])][0]
        assert await redis.scard(keys.batch(batch, "loads:smollm2")) == 1, "the lease kept the other out"
        children = list(descendants(victim.pid))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert not wait_gone(children), "the killed worker's model server exits too"
        assert not driving.done()
        async with asyncio.timeout(180):
            status = await driving
    finally:
        for proc, log in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
    survivor = next(pid for pid in workers if pid != victim.pid)
    assert status["items"] == {"total": 4, "done": 4, "failed": 0}
    assert status["calls"] == {"enqueued": 4, "done": 4, "dead": 0}, "every call stored exactly once"
    stored = await outcomes(redis, batch)
    assert len(stored) == 4 and all(o.content for o in stored.values())
    pid = {o.worker: int(o.worker.split(":")[2]) for o in stored.values()}
    assert set(pid.values()) == {victim.pid, survivor}
    retaken = [o for o in stored.values() if o.attempts == 2]
    assert retaken, "the call the killed worker held was taken over"
    assert all(pid[o.worker] == survivor for o in retaken)
    assert status["experts"]["smollm2"]["model_loads"] == 2, "one load in each worker"
    assert await redis.xlen(keys.stream("smollm2")) == 0


async def test_sigkill_redis_mid_batch(tmp_path: Path) -> None:
    data, port = tmp_path / "redis", free_port()
    server = RedisServer(data_dir=data, port=port)
    url = await server.start()
    settings = Settings.load(write_settings(tmp_path, **FAST))
    client = connect(url)
    try:
        driver = await submit(client, settings, n=4, max_tokens=24)
        worker = Worker(client, settings, load_experts(settings.experts_file))
        driving = asyncio.create_task(drive(driver, worker))

        async def some_done() -> bool:
            return int(await client.hget(keys.batch(driver.batch_id, "stats"), "done:smollm2") or 0) >= 1

        await until(some_done)
        done = int(await client.hget(keys.batch(driver.batch_id, "stats"), "done:smollm2") or 0)
        assert done < 4 and not driving.done(), "killed mid-batch"
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        await server.stop()  # reaps it; a data_dir given by the caller is kept
        await asyncio.sleep(1.0)
        server = RedisServer(data_dir=data, port=port)
        await server.start()
        async with asyncio.timeout(180):
            status = await driving
        assert status["items"] == {"total": 4, "done": 4, "failed": 0}
        assert status["calls"] == {"enqueued": 4, "done": 4, "dead": 0}
        assert len(await outcomes(client, driver.batch_id)) == 4
        assert status["experts"]["smollm2"]["model_loads"] == 1
    finally:
        await client.aclose()
        await server.stop()


async def test_expert_server_dies_mid_call_then_loads_again(redis: aioredis.Redis, tmp_path: Path) -> None:
    settings = Settings.load(write_settings(tmp_path, **FAST))
    driver = await submit(redis, settings, n=1, max_tokens=48)
    worker = Worker(redis, settings, load_experts(settings.experts_file))
    driving = asyncio.create_task(drive(driver, worker))
    attempts = keys.batch(driver.batch_id, "attempts")

    async def in_call() -> bool:
        launcher = worker.pool.launchers.get("smollm2")
        return bool(await redis.hlen(attempts)) and launcher is not None and launcher.running

    await until(in_call)
    launcher = worker.pool.launchers["smollm2"]
    assert launcher.pid is not None
    os.kill(launcher.pid, signal.SIGKILL)
    async with asyncio.timeout(180):
        status = await driving
    [outcome] = (await outcomes(redis, driver.batch_id)).values()
    assert outcome.content and outcome.attempts == 2, "retried once, after loading the model again"
    assert status["items"]["done"] == 1 and status["calls"]["dead"] == 0
    assert status["experts"]["smollm2"]["model_loads"] == 2


async def test_expert_server_that_stays_dead_is_dead_lettered(redis: aioredis.Redis, tmp_path: Path) -> None:
    config = load_experts(REPO / "config" / "experts.yaml")[0]
    server = LlamaCppServer("remote", resolve_model(config.model, MODEL_CACHE), log_dir=tmp_path, parallel=1)
    url = await server.start()
    experts = tmp_path / "experts.yaml"
    experts.write_text(
        "experts:\n  - {name: remote, backend: openai, model: remote, params_b: 0.135, retries: 0,"
        f" timeout_s: 30, endpoint: '{url}'}}\n"
    )
    settings = Settings.load(write_settings(tmp_path, experts_file=experts, **FAST))
    try:
        driver = await submit(redis, settings, n=1, max_tokens=64)
        worker = Worker(redis, settings, load_experts(experts))
        driving = asyncio.create_task(drive(driver, worker))
        await until(lambda: redis.hlen(keys.batch(driver.batch_id, "attempts")))
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        async with asyncio.timeout(120):
            status = await driving
    finally:
        await server.stop()
    assert status["items"] == {"total": 1, "done": 0, "failed": 1}, "reported, not dropped"
    assert status["calls"] == {"enqueued": 1, "done": 0, "dead": 1}
    [letter] = status["dead_letters"]
    assert letter["expert"] == "remote" and letter["attempts"] == 3 and letter["error"]
    [outcome] = (await outcomes(redis, driver.batch_id)).values()
    assert outcome.error == letter["error"] and outcome.content is None
    output = (await BatchStore(redis).outputs(driver.batch_id))["q0"]
    assert output["content"] is None and "remote" in output["error"]
