"""A batch's status: items and calls done, dead letters, and per expert its loads and queue."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from coe.batch import keys
from coe.batch.store import BatchStore


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _experts(pool: list[str], stats: dict[str, str]) -> list[str]:
    seen = [f.split(":", 1)[1] for f in stats if f.startswith(("enqueued:", "done:"))]
    return list(dict.fromkeys([*pool, *sorted(seen)]))


async def batch_status(redis: aioredis.Redis, batch_id: str) -> dict[str, Any]:
    """Everything ``coe batch status`` prints. ``model_loads`` counts the model loads that attempted
    this batch's calls; ``loads``, ``load_s`` and ``resident_s`` are the expert's totals."""
    store = BatchStore(redis)
    meta = await store.meta(batch_id)
    raw = await redis.hgetall(keys.batch(batch_id, "stats"))
    stats = {_text(k): _text(v) for k, v in raw.items()}
    experts = _experts(meta["pool"], stats)
    pipe = redis.pipeline(transaction=False)
    for expert in experts:
        pipe.scard(keys.batch(batch_id, f"loads:{expert}"))
        pipe.xlen(keys.stream(expert))
        pipe.hgetall(keys.expert_stats(expert))
        pipe.exists(keys.lease(expert))
    replies = await pipe.execute()
    now = time.time()
    per_expert: dict[str, dict[str, Any]] = {}
    for i, expert in enumerate(experts):
        loads, depth, totals_raw, leased = replies[4 * i : 4 * i + 4]
        totals = {_text(k): _text(v) for k, v in totals_raw.items()}
        # a worker that died holding the model leaves resident_since behind, but not its lease
        since = float(totals.get("resident_since") or 0) if leased else 0.0
        per_expert[expert] = {
            "enqueued": int(stats.get(f"enqueued:{expert}", 0)),
            "calls_done": int(stats.get(f"done:{expert}", 0)),
            "model_loads": int(loads),
            "queue_depth": int(depth),
            "loads": int(totals.get("loads", 0)),
            "load_s": round(float(totals.get("load_s", 0)), 3),
            "resident_s": round(float(totals.get("resident_s", 0)) + (now - since if since else 0.0), 3),
            "resident": bool(since),
        }
    dead = await store.dead_letters(batch_id)
    status: dict[str, Any] = {
        "id": batch_id,
        "graph": meta["graph"],
        "status": meta["status"],
        "items": {
            "total": meta["n"],
            "done": int(stats.get("items_done", 0)),
            "failed": int(stats.get("items_failed", 0)),
        },
        "calls": {
            "enqueued": sum(e["enqueued"] for e in per_expert.values()),
            "done": sum(e["calls_done"] for e in per_expert.values()),
            "dead": int(stats.get("dead", 0)),
        },
        "max_resident": int(stats.get("max_resident", 0)),
        "experts": per_expert,
        "dead_letters": dead,
    }
    return status
