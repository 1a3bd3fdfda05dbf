"""Batch mode: route everything first, then serve the calls grouped by expert so that each model
is loaded once (Symbolic-MoE's batching, for live self-hosted experts).

How the parts fit:

- ``store``: a batch in Redis (items, outputs, metadata); ``status``: what ``coe batch status``
  prints (per expert: model loads, load and resident time, queue depth, calls done).
- ``driver``: runs every item through the *same compiled graph nodes* as online serving (direct
  executor), with expert clients from ``dispatch`` that enqueue the call instead of making it.
- ``dispatch``: the barrier. Calls are held until no item is computing and no call is out, then
  a whole stage (routing done for every item → every item's expert calls; then every judge call;
  then the next loop round) is enqueued in one pipeline. A call is identified by (batch, item,
  stage = node#round, expert, sample), deterministic, so a restarted driver finds stored results.
- ``queue``: one Redis Stream per expert, consumer group ``workers``, at-least-once delivery;
  results stored with ``SET NX`` and acknowledged in the same Lua script; ``XAUTOCLAIM`` for calls
  of dead workers; attempts counted, dead letters after the last.
- ``worker`` + ``manager``: the model manager of ``coe worker`` (expert lease, memory budget,
  load, drain, release); ``adopt``: workers take over batches whose driver died.
- ``connect``: ``REDIS_URL``, else a persistent local redis-server (AOF, ``appendfsync always``)
  shared by the batch commands; ``run``: submit and drive from one process (with an in-process
  worker when Redis is local). ``coe eval --batch`` (``coe.eval.batched``) builds on these.
- ``multiplex`` + ``online``: the same queues and model manager for live traffic in ``coe serve``
  (more experts than the memory budget holds; calls wait on their stream, then stream);
  ``openai_api``: OpenAI's Batch API (files, batch objects, output and error files) on top.

Why a strict stage barrier rather than enqueueing each call as soon as it is made: the worker
picks the expert with the most pending work, so it must see whole stages; a trickle of calls
would make it load an expert for part of a stage and load it again for the rest. Workers that
would idle during the brief barrier at a stage boundary cost little next to one model load.
"""

from coe.batch.driver import BatchDriver
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker, WorkerOptions

__all__ = ["BatchDriver", "BatchItem", "BatchStore", "Worker", "WorkerOptions"]
