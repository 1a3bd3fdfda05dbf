"""Every Redis key the batch system uses, in one place.

Per expert: ``coe:calls:<expert>`` (a stream of calls, read by the consumer group ``workers``),
``coe:lease:<expert>`` (the worker that may load it), ``coe:stats:<expert>`` (loads, load and
resident time, calls done; over all batches). Per call: ``coe:result:<call id>``. Per batch:
``coe:batch:<id>`` (metadata) and ``coe:batch:<id>:<part>`` for its items, outputs, counters,
attempts, notifications, dead letters and the loads that served it. ``coe:batches`` holds the
batches a worker may adopt when their driver is gone.
"""

from __future__ import annotations

GROUP = "workers"
BATCHES = "coe:batches"


def stream(expert: str) -> str:
    return f"coe:calls:{expert}"


def lease(expert: str) -> str:
    return f"coe:lease:{expert}"


def driver_lease(batch_id: str) -> str:
    return f"coe:lease:batch:{batch_id}"


def expert_stats(expert: str) -> str:
    return f"coe:stats:{expert}"


def result(call_id: str) -> str:
    return f"coe:result:{call_id}"


def batch(batch_id: str, part: str | None = None) -> str:
    """The batch's metadata hash, or one of its parts: items, order, outputs, stats, enqueued,
    attempts, notify, dead, loads:<expert>."""
    return f"coe:batch:{batch_id}" if part is None else f"coe:batch:{batch_id}:{part}"
