"""The call queue against a real redis-server: enqueue once, XACK only after the result is stored,
idempotent results, XAUTOCLAIM of a dead consumer's calls, leases, and dead letters after N
attempts (a real worker calling an expert whose server is gone)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from batch_support import until

from coe.batch import keys
from coe.batch.calls import Call, CallKey, Outcome
from coe.batch.lease import Leases
from coe.batch.queue import CallQueue
from coe.batch.status import batch_status
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker, WorkerOptions
from coe.config import ExpertConfig, Settings
from coe.experts.launch import free_port
from coe.types import ExpertRequest, Usage

pytestmark = pytest.mark.asyncio(loop_scope="module")


def make_call(batch: str, expert: str, item: str = "q1", sample: int = 0) -> Call:
    request = ExpertRequest([{"role": "user", "content": "hi"}], max_tokens=4, metadata={"question_id": 7})
    return Call(CallKey(batch, item, "experts#0", expert, sample), request)


def fresh() -> tuple[str, str]:
    return uuid.uuid4().hex[:12], f"t-{uuid.uuid4().hex[:8]}"


def answer(text: str, worker: str = "w1") -> Outcome:
    return Outcome(text, Usage(3, 1, 0.0, 0.1), worker=worker, load=f"{worker}/x#1", resident=1)


async def test_call_fields_round_trip() -> None:
    call = make_call("b", "e", item="odd:id/1", sample=2)
    again = Call.from_fields({k.encode(): v.encode() for k, v in call.fields().items()})
    assert again == call
    assert call.key.id == "b:odd%3Aid%2F1:experts#0:e:2"


async def test_enqueue_is_once_per_call(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    call = make_call(batch, expert)
    assert await queue.enqueue([call, make_call(batch, expert, "q2")]) == 2
    assert await queue.enqueue([call]) == 0, "a call already queued is not queued again"
    assert await redis.xlen(keys.stream(expert)) == 2
    assert await redis.hget(keys.batch(batch, "stats"), f"enqueued:{expert}") == b"2"


async def test_ack_only_after_the_result_is_stored(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    call = make_call(batch, expert)
    await queue.enqueue([call])
    [(message_id, got)] = await queue.read(expert, "w1", 10, block_ms=100)
    assert got == call
    pending = await redis.xpending(keys.stream(expert), keys.GROUP)
    assert pending["pending"] == 1, "read but not stored: still pending"
    assert await queue.results([call.key.id]) == {}
    assert await queue.store(message_id, call, answer("Paris"))
    assert (await redis.xpending(keys.stream(expert), keys.GROUP))["pending"] == 0
    assert await redis.xlen(keys.stream(expert)) == 0, "acknowledged calls leave the stream"
    assert (await queue.results([call.key.id]))[call.key.id].content == "Paris"
    assert await queue.notifications(batch, timeout_s=0.1) == [call.key.id]
    assert await redis.hget(keys.batch(batch, "stats"), f"done:{expert}") == b"1"


async def test_results_are_stored_once(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    call = make_call(batch, expert)
    await queue.enqueue([call])
    [(first, _)] = await queue.read(expert, "w1", 1, block_ms=100)
    assert await queue.store(first, call, answer("one"))
    assert not await queue.store(first, call, answer("two", worker="w2")), "a second store is a no-op"
    assert (await queue.results([call.key.id]))[call.key.id].content == "one"
    assert await redis.hget(keys.batch(batch, "stats"), f"done:{expert}") == b"1"
    assert await redis.llen(keys.batch(batch, "notify")) == 1
    assert await redis.scard(keys.batch(batch, f"loads:{expert}")) == 1


async def test_a_dead_consumers_calls_are_reclaimed(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    calls = [make_call(batch, expert, f"q{i}") for i in range(2)]
    await queue.enqueue(calls)
    taken = await queue.read(expert, "dead", 2, block_ms=100)
    assert len(taken) == 2
    assert await queue.read(expert, "alive", 2, block_ms=50) == [], "delivered calls are not redelivered"
    assert await queue.reclaim(expert, "alive", 60_000, 10) == [], "not idle long enough yet"
    await asyncio.sleep(0.3)
    await queue.touch(expert, "dead", [taken[1][0]])  # this one is still being worked on
    depth = (await queue.depths([expert], visibility_ms=200))[expert]
    assert depth.pending == 1 and depth.oldest_ms > 0
    reclaimed = await queue.reclaim(expert, "alive", 200, 10)
    assert [m for m, _ in reclaimed] == [taken[0][0]]
    assert reclaimed[0][1] == calls[0]
    assert await queue.store(reclaimed[0][0], calls[0], answer("done by alive"))
    left = await redis.xpending_range(keys.stream(expert), keys.GROUP, "-", "+", 10)
    assert [(e["message_id"].decode(), e["consumer"].decode()) for e in left] == [(taken[1][0], "dead")]


async def test_requeue_puts_a_call_back_once(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    call = make_call(batch, expert)
    await queue.enqueue([call])
    [(message_id, _)] = await queue.read(expert, "w1", 1, block_ms=100)
    await queue.requeue(message_id, call)
    await queue.requeue(message_id, call)  # a client retry after a lost reply: no second copy
    assert await redis.xlen(keys.stream(expert)) == 1
    [(again, got)] = await queue.read(expert, "w1", 1, block_ms=100)
    assert again != message_id and got == call


async def test_leases(redis: aioredis.Redis) -> None:
    key = f"coe:lease:t-{uuid.uuid4().hex[:8]}"
    first, second = Leases(redis, "w1", 0.3), Leases(redis, "w2", 0.3)
    assert await first.acquire(key)
    assert not await second.acquire(key), "held by w1"
    assert await first.renew(key)
    await asyncio.sleep(0.5)
    assert await second.acquire(key), "w1's lease expired"
    assert not await first.renew(key) and key not in first.held
    await first.release(key)
    assert await second.owner_of(key) == "w2", "only the owner releases"
    await second.release(key)
    assert await second.owner_of(key) is None


async def test_dead_letter_after_max_attempts(redis: aioredis.Redis, settings: Settings) -> None:
    """A real worker calls an expert whose server is gone: each failed attempt puts the call back;
    after the last one its error is stored, dead-lettered and reported by the batch."""
    gone = ExpertConfig(
        name=f"gone-{uuid.uuid4().hex[:6]}",
        backend="openai",
        model="gone",
        endpoint=f"http://127.0.0.1:{free_port()}/v1",
        params_b=0.1,
        retries=0,
        timeout_s=10,
    )
    store = BatchStore(redis)
    item = BatchItem("q1", [{"role": "user", "content": "hi"}])
    batch = await store.create("single", [item], pool=[gone.name])
    call = make_call(batch, gone.name)
    await CallQueue(redis).enqueue([call])
    worker = Worker(redis, settings, [gone], WorkerOptions(max_attempts=3, poll_s=0.05))
    serving = asyncio.create_task(worker.run())
    try:
        await until(lambda: redis.exists(keys.result(call.key.id)), timeout_s=60)
    finally:
        worker.stop()
        await serving
    outcome = (await CallQueue(redis).results([call.key.id]))[call.key.id]
    assert outcome.error and outcome.content is None and outcome.attempts == 3
    assert await redis.hget(keys.batch(batch, "attempts"), call.key.id) == b"3"
    assert await redis.xlen(keys.stream(gone.name)) == 0, "nothing left on the stream"
    status = await batch_status(redis, batch)
    assert status["calls"]["dead"] == 1
    [letter] = status["dead_letters"]
    assert letter["call"] == call.key.id and letter["attempts"] == 3 and letter["expert"] == gone.name
    assert "Connection" in letter["error"] or "connect" in letter["error"], letter["error"]


async def test_items_file_is_checked(tmp_path: Path) -> None:
    from coe.batch.store import read_items
    from coe.errors import UserError

    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}], "answer": "B"}\n\n')
    [item] = read_items(path)
    assert item.id == "a" and item.answer == "B"
    for line, problem in [
        ("not json", "in.jsonl:1: "),
        ('{"id": 1, "messages": []}', '"id" must be a non-empty string'),
        ('{"id": "a", "messages": [{"role": "x", "content": "hi"}]}', "messages[0] must be"),
        ('{"id": "a", "messages": [{"role": "user", "content": "hi"}], "extra": 1}', "unknown field"),
    ]:
        path.write_text(line + "\n")
        with pytest.raises(UserError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            read_items(path)


async def test_a_lost_stream_is_made_again(redis: aioredis.Redis) -> None:
    batch, expert = fresh()
    queue = CallQueue(redis)
    await queue.enqueue([make_call(batch, expert)])
    await redis.delete(keys.stream(expert))  # as if Redis lost its data
    assert await queue.read(expert, "w1", 1, block_ms=10) == []
    assert (await queue.depths([expert], 1000))[expert].pending == 0
    await queue.enqueue([make_call(batch, expert, "q2")])
    assert len(await queue.read(expert, "w1", 1, block_ms=10)) == 1
