"""The call queue: one Redis Stream per expert, read by the consumer group ``workers``.

Delivery is at least once. A worker stores a call's outcome and acknowledges its message in one
Lua script (``SET NX`` on the result key, then ``XACK`` and ``XDEL``), so a message is never
acknowledged before its result is stored and a result is stored once however often the call ran.
Messages of a dead worker are taken over with ``XAUTOCLAIM`` after the visibility timeout; live
workers keep theirs fresh with ``XCLAIM ... JUSTID``. Every script is safe to run twice, which is
what a client retry after a lost connection does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from coe.batch import keys
from coe.batch.calls import Call, CallKey, Outcome

_ENQUEUE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('HINCRBY', KEYS[3], 'enqueued:' .. ARGV[2], 1)
return 1
"""

_STORE = """
local stored = redis.call('SET', KEYS[1], ARGV[3], 'NX')
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
if not stored then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[4])
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[7], ARGV[8])
  redis.call('HINCRBY', KEYS[4], 'dead', 1)
else
  redis.call('HINCRBY', KEYS[4], 'done:' .. ARGV[5], 1)
  redis.call('HINCRBY', KEYS[5], 'calls', 1)
end
if ARGV[6] ~= '' then redis.call('SADD', KEYS[6], ARGV[6]) end  -- also done per attempt
local resident = tonumber(ARGV[7])
if resident > tonumber(redis.call('HGET', KEYS[4], 'max_resident') or '0') then
  redis.call('HSET', KEYS[4], 'max_resident', resident)
end
return 1
"""

_REQUEUE = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if acked == 1 then redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3)) end
return acked
"""

Message = tuple[str, Call]


@dataclass(frozen=True, slots=True)
class Depth:
    """Work waiting for an expert: undelivered calls plus calls a dead worker left behind."""

    pending: int
    oldest_ms: int  # arrival of the oldest call on the stream (ms since the epoch); 0 if empty


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _messages(entries: Iterable[Any]) -> list[Message]:
    return [(_id(mid), Call.from_fields(fields)) for mid, fields in entries if mid is not None and fields]


class CallQueue:
    """Stream operations for drivers (enqueue, results) and workers (read, reclaim, store)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._groups: set[str] = set()
        self._enqueue = redis.register_script(_ENQUEUE)
        self._store = redis.register_script(_STORE)
        self._requeue = redis.register_script(_REQUEUE)

    async def ensure_groups(self, experts: Iterable[str]) -> None:
        for expert in experts:
            if expert in self._groups:
                continue
            try:
                await self.redis.xgroup_create(keys.stream(expert), keys.GROUP, id="0", mkstream=True)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
            self._groups.add(expert)

    # --- drivers ---------------------------------------------------------------------------------

    async def enqueue(self, calls: Sequence[Call]) -> int:
        """Put calls on their experts' streams, each at most once per batch; returns how many were new."""
        await self.ensure_groups({c.key.expert for c in calls})
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            flat = [x for pair in call.fields().items() for x in pair]
            key = call.key
            keys_ = [
                keys.batch(key.batch, "enqueued"),
                keys.stream(key.expert),
                keys.batch(key.batch, "stats"),
            ]
            await self._enqueue(keys=keys_, args=[key.id, key.expert, *flat], client=pipe)
        return sum(int(n) for n in await pipe.execute())

    async def push(self, call: Call) -> None:
        """Put one call on its expert's stream, unrecorded (an online call: its id is unique)."""
        await self.ensure_groups([call.key.expert])
        fields: dict[Any, Any] = call.fields()
        await self.redis.xadd(keys.stream(call.key.expert), fields)

    async def results(self, call_ids: Sequence[str]) -> dict[str, Outcome]:
        if not call_ids:
            return {}
        values = await self.redis.mget([keys.result(i) for i in call_ids])
        return {i: Outcome.from_json(v) for i, v in zip(call_ids, values, strict=True) if v is not None}

    async def notifications(self, batch_id: str, timeout_s: float) -> list[str]:
        """Ids of calls whose outcome was stored since the last look (blocks up to ``timeout_s``)."""
        key = keys.batch(batch_id, "notify")
        first: Any = await self.redis.blpop([key], timeout=timeout_s)
        if not first:
            return []
        rest: Any = await self.redis.lpop(key, 1000) or []
        return [_id(first[1]), *(_id(v) for v in rest)]

    # --- workers ---------------------------------------------------------------------------------

    def _lost_group(self, err: ResponseError, experts: Iterable[str]) -> None:
        """A stream or its group vanished (Redis lost its data, or someone deleted it): forget that
        we made it, so the next call makes it again."""
        if "NOGROUP" not in str(err):
            raise err
        self._groups.difference_update(experts)

    async def depths(self, experts: Sequence[str], visibility_ms: int) -> dict[str, Depth]:
        await self.ensure_groups(experts)
        pipe = self.redis.pipeline(transaction=False)
        for expert in experts:
            stream = keys.stream(expert)
            pipe.xlen(stream)
            pipe.xpending(stream, keys.GROUP)
            pipe.xpending_range(stream, keys.GROUP, "-", "+", 1000, idle=visibility_ms)
            pipe.xrange(stream, "-", "+", count=1)
        try:
            replies = await pipe.execute()
        except ResponseError as err:
            self._lost_group(err, experts)
            return {}
        out = {}
        for i, expert in enumerate(experts):
            length, summary, stale, first = replies[4 * i : 4 * i + 4]
            pending = length - int(summary["pending"]) + len(stale)
            oldest = int(_id(first[0][0]).split("-")[0]) if first else 0
            out[expert] = Depth(max(0, pending), oldest)
        return out

    async def read(self, expert: str, consumer: str, count: int, block_ms: int) -> list[Message]:
        await self.ensure_groups([expert])
        try:
            reply: Any = await self.redis.xreadgroup(
                keys.GROUP, consumer, {keys.stream(expert): ">"}, count=count, block=block_ms
            )
        except ResponseError as err:
            self._lost_group(err, [expert])
            return []
        return [m for _, entries in reply or [] for m in _messages(entries)]

    async def reclaim(self, expert: str, consumer: str, min_idle_ms: int, count: int) -> list[Message]:
        """Take over calls another consumer has held longer than ``min_idle_ms`` (it is presumed dead)."""
        await self.ensure_groups([expert])
        try:
            reply = await self.redis.xautoclaim(
                keys.stream(expert), keys.GROUP, consumer, min_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as err:
            self._lost_group(err, [expert])
            return []
        return _messages(reply[1])

    async def touch(self, expert: str, consumer: str, message_ids: Sequence[str]) -> None:
        """Reset the idle time of calls still being worked on, so nobody reclaims them."""
        if message_ids:
            await self.redis.xclaim(
                keys.stream(expert), keys.GROUP, consumer, 0, list(message_ids), justid=True
            )

    async def attempt(self, key: CallKey, load: str) -> int:
        """Count one more attempt at a call, made on model load ``load``; returns the count so far."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(keys.batch(key.batch, "attempts"), key.id, 1)
        if load:
            pipe.sadd(keys.batch(key.batch, f"loads:{key.expert}"), load)
        replies = await pipe.execute()
        return int(replies[0])

    async def done(self, key: CallKey) -> bool:
        return bool(await self.redis.exists(keys.result(key.id)))

    async def store(self, message_id: str, call: Call, outcome: Outcome, dead: bool = False) -> bool:
        """Store the outcome (once), then acknowledge the message. False if it was stored before."""
        key = call.key
        dead_letter = ""
        if dead:
            dead_letter = json.dumps(
                {
                    "call": key.id,
                    "item": key.item,
                    "stage": key.stage,
                    "expert": key.expert,
                    "sample": key.sample,
                    "attempts": outcome.attempts,
                    "error": outcome.error,
                    "at": round(time.time(), 3),
                }
            )
        stored = await self._store(
            keys=[
                keys.result(key.id),
                keys.stream(key.expert),
                keys.batch(key.batch, "notify"),
                keys.batch(key.batch, "stats"),
                keys.expert_stats(key.expert),
                keys.batch(key.batch, f"loads:{key.expert}"),
                keys.batch(key.batch, "dead"),
            ],
            args=[
                keys.GROUP,
                message_id,
                outcome.to_json(),
                key.id,
                key.expert,
                outcome.load,
                outcome.resident,
                dead_letter,
            ],
        )
        return bool(stored)

    async def requeue(self, message_id: str, call: Call) -> None:
        """Acknowledge a failed attempt and put the call back at the end of its stream."""
        flat = [x for pair in call.fields().items() for x in pair]
        await self._requeue(keys=[keys.stream(call.key.expert)], args=[keys.GROUP, message_id, *flat])

    async def ack(self, message_id: str, expert: str) -> None:
        """Drop a message whose call already has a stored outcome (a duplicate delivery)."""
        stream = keys.stream(expert)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(stream, keys.GROUP, message_id)
        pipe.xdel(stream, message_id)
        await pipe.execute()
