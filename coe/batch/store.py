"""Batches in Redis: metadata, items, per-item outputs, counters and the status report.

``coe:batch:<id>`` (hash): graph, pool, max_tokens, status (running | done), n, created, finished,
adoptable. Items are kept as JSON in ``:items`` (by id) with their order in ``:order``; each
item's output (``{"id", "content", "prediction"?, "trace"}`` or with ``"error"``) goes to
``:outputs`` once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from coe.batch import keys
from coe.errors import UserError
from coe.types import Message

_PUT_OUTPUT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return 1
"""

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class BatchItem:
    id: str
    messages: list[Message]
    answer: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: the item's own generation parameters (Batch API lines): max_tokens, temperature, stop, sampling
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "messages": self.messages,
                "answer": self.answer,
                "metadata": dict(self.metadata),
                "params": dict(self.params),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> BatchItem:
        raw = json.loads(text)
        return cls(
            raw["id"], raw["messages"], raw.get("answer"), raw.get("metadata") or {}, raw.get("params") or {}
        )


def parse_item(raw: Any) -> BatchItem:
    """One input line ``{"id": str, "messages": [...], "answer"?: str}``; raises ValueError."""
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(raw) - {"id", "messages", "answer"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise ValueError('"id" must be a non-empty string')
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f'messages[{i}] must be {{"role": ..., "content": str}}')
    answer = raw.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError('"answer" must be a string')
    return BatchItem(raw["id"], [{"role": m["role"], "content": m["content"]} for m in messages], answer)


def read_items(path: Path) -> list[BatchItem]:
    """Read and check a JSONL input file; problems raise ``UserError`` as ``FILE:LINE: message``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    items: list[BatchItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = parse_item(json.loads(line))
        except ValueError as err:
            raise UserError(f"{path}:{number}: {err}") from None
        if item.id in seen:
            raise UserError(f"{path}:{number}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise UserError(f"{path}: no items")
    return items


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BatchStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._put_output = redis.register_script(_PUT_OUTPUT)

    async def create(
        self,
        graph: str,
        items: Sequence[BatchItem],
        *,
        pool: Sequence[str],
        max_tokens: int | None = None,
        adoptable: bool = True,
    ) -> str:
        """Store a new batch; returns its id. ``adoptable``: a worker may drive it if its driver dies."""
        batch_id = uuid.uuid4().hex[:16]
        meta: dict[FieldT, EncodableT] = {
            "graph": graph,
            "pool": json.dumps(list(pool)),
            "max_tokens": "" if max_tokens is None else str(max_tokens),
            "status": "running",
            "n": str(len(items)),
            "created": f"{time.time():.3f}",
            "adoptable": "1" if adoptable else "0",
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.batch(batch_id, "items"), mapping={i.id: i.to_json() for i in items})
        pipe.rpush(keys.batch(batch_id, "order"), *(i.id for i in items))
        pipe.hset(keys.batch(batch_id), mapping=meta)
        if adoptable:
            pipe.sadd(keys.BATCHES, batch_id)
        await pipe.execute()
        return batch_id

    async def meta(self, batch_id: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(keys.batch(batch_id))
        if not raw:
            raise UserError(f"no batch {batch_id!r}")
        meta: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
        meta["pool"] = json.loads(meta["pool"])
        meta["n"] = int(meta["n"])
        meta["max_tokens"] = int(meta["max_tokens"]) if meta["max_tokens"] else None
        meta["adoptable"] = meta["adoptable"] == "1"
        return meta

    async def items(self, batch_id: str) -> list[BatchItem]:
        order = [_text(i) for i in await self.redis.lrange(keys.batch(batch_id, "order"), 0, -1)]
        raw = await self.redis.hgetall(keys.batch(batch_id, "items"))
        by_id = {_text(k): BatchItem.from_json(v) for k, v in raw.items()}
        return [by_id[i] for i in order]

    async def outputs(self, batch_id: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(keys.batch(batch_id, "outputs"))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def put_output(self, batch_id: str, output: Mapping[str, Any]) -> bool:
        """Store an item's output once; counts it as done or failed."""
        counter = "items_failed" if output.get("error") else "items_done"
        stored = await self._put_output(
            keys=[keys.batch(batch_id, "outputs"), keys.batch(batch_id, "stats")],
            args=[output["id"], json.dumps(output, ensure_ascii=False), counter],
        )
        return bool(stored)

    async def finish(self, batch_id: str, status: str = "done") -> None:
        """Mark the batch ended (``done``, or ``cancelled`` when its cancellation stopped it)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.batch(batch_id), mapping={"status": status, "finished": f"{time.time():.3f}"})
        pipe.srem(keys.BATCHES, batch_id)
        await pipe.execute()

    async def cancel(self, batch_id: str, reason: str = "cancelled") -> None:
        """Ask the batch's driver to stop (it finishes it as ``cancelled``); workers skip its calls."""
        await self.redis.hsetnx(keys.batch(batch_id), "cancel", reason)

    async def cancelled(self, batch_id: str) -> str | None:
        value = await self.redis.hget(keys.batch(batch_id), "cancel")
        return None if value is None else _text(value)

    async def dead_letters(self, batch_id: str) -> list[dict[str, Any]]:
        return [json.loads(v) for v in await self.redis.lrange(keys.batch(batch_id, "dead"), 0, -1)]
