"""OpenAI's Batch API over coe's batch scheduler: files, batch objects, and their finalization.

A Batch API batch is a coe batch (``coe.batch.store``) plus an OpenAI batch object. Everything
lives in Redis, so a batch and its files survive a restart of the API: ``coe:file:<id>`` (hash:
the file object's fields and its bytes), ``coe:files`` (ids by creation), ``coe:oai:<coe id>``
(the batch object as JSON, and its input lines: custom id, or the reason the line was refused),
``coe:oai:batches`` (ids by creation, for the list) and ``coe:oai:active`` (batches not final).

The coe batch is adoptable: the API's own adopter drives it (any ``coe worker`` may too, and
takes it over if the API dies). ``BatchAPI.run`` watches active batches: a finished coe batch is
finalized (output and error files written, status ``completed``); a cancel request or the end of
the completion window stops its driver, and the unfinished lines go to the error file as
``batch_cancelled`` / ``batch_expired``. Finalizing is idempotent (file ids are derived from the
batch id), so an API that dies while finalizing finishes the job after its restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from coe.batch import keys
from coe.batch.store import BatchItem, BatchStore
from coe.errors import CoeError, InvalidRequest

log = logging.getLogger("coe.batch")

FILES = "coe:files"
BATCHES = "coe:oai:batches"
ACTIVE = "coe:oai:active"
ENDPOINT = "/v1/chat/completions"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
LATE = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed: its batch was cancelled."),
}


class NotFound(CoeError):
    """No file or batch of that id (HTTP 404)."""


def _file_key(file_id: str) -> str:
    return f"coe:file:{file_id}"


def _batch_key(coe_id: str) -> str:
    return f"coe:oai:{coe_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _coe_id(batch_id: str) -> str:
    if not batch_id.startswith("batch_"):
        raise NotFound(f"No such Batch object: {batch_id}")
    return batch_id.removeprefix("batch_")


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its number and custom id, and why it was refused (None: it runs)."""

    number: int
    custom_id: str | None
    code: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.number, "custom_id": self.custom_id, "code": self.code, "message": self.message}


def _request_id(coe_id: str, line: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{coe_id}:{line}".encode()).hexdigest()[:24]


def _error_line(coe_id: str, line: Line, code: str, message: str) -> dict[str, Any]:
    return {
        "id": _request_id(coe_id, line.number),
        "custom_id": line.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def _output_line(coe_id: str, line: Line, graph: str, output: dict[str, Any], created: int) -> dict[str, Any]:
    trace = output.get("trace") or {}
    usage = trace.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    request_id = _request_id(coe_id, line.number)
    body = {
        "id": "chatcmpl-" + request_id.removeprefix("batch_req_"),
        "object": "chat.completion",
        "created": created,
        "model": graph,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output["content"]},
                "finish_reason": output.get("finish_reason", "stop"),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "coe": trace,
    }
    return {
        "id": request_id,
        "custom_id": line.custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


class BatchAPI:
    """The Batch API's state and its background finalizer; the HTTP router only translates."""

    def __init__(self, redis: aioredis.Redis, window_s: float, poll_s: float = 1.0) -> None:
        self.redis = redis
        self.store = BatchStore(redis)
        self.window_s = window_s
        self.poll_s = poll_s

    # --- files -----------------------------------------------------------------------------------

    async def create_file(
        self, content: bytes, filename: str, purpose: str, file_id: str | None = None
    ) -> dict[str, Any]:
        file_id = file_id or f"file-{uuid.uuid4().hex[:24]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(_file_key(file_id), mapping={"meta": json.dumps(meta), "content": content})
        pipe.zadd(FILES, {file_id: time.time()})
        await pipe.execute()
        return meta

    async def file(self, file_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(_file_key(file_id), "meta")
        if raw is None:
            raise NotFound(f"No such File object: {file_id}")
        meta: dict[str, Any] = json.loads(raw)
        return meta

    async def file_content(self, file_id: str) -> bytes:
        content = await self.redis.hget(_file_key(file_id), "content")
        if content is None:
            raise NotFound(f"No such File object: {file_id}")
        return content if isinstance(content, bytes) else str(content).encode()

    # --- batches ---------------------------------------------------------------------------------

    async def create_batch(
        self,
        *,
        input_file_id: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        graph: str | None,
        pool: Sequence[str],
        items: Sequence[BatchItem],
        lines: Sequence[Line],
    ) -> dict[str, Any]:
        """Store the batch (the coe batch of ``items``, adoptable) and its object; ``lines`` are
        every input line in order, refused ones with their reason."""
        now = int(time.time())
        counts = {"total": len(lines), "completed": 0, "failed": sum(1 for line in lines if line.code)}
        if items and graph is not None:
            coe_id = await self.store.create(graph, items, pool=pool)
            status, errors = "in_progress", None
        else:
            coe_id = uuid.uuid4().hex[:16]
            status = "failed"
            data = [
                {"code": line.code, "message": line.message, "param": None, "line": line.number}
                for line in lines
                if line.code
            ]
            errors = {"object": "list", "data": data or [{"code": "empty_file", "message": "no requests"}]}
        batch_id = f"batch_{coe_id}"
        batch: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "model": graph,
            "errors": errors,
            "input_file_id": input_file_id,
            "completion_window": completion_window,
            "status": status,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now if status == "in_progress" else None,
            "expires_at": int(now + self.window_s),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": now if status == "failed" else None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": counts,
            "metadata": metadata,
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            _batch_key(coe_id),
            mapping={"object": json.dumps(batch), "lines": json.dumps([line.as_dict() for line in lines])},
        )
        pipe.zadd(BATCHES, {batch_id: time.time()})
        pipe.sadd(ACTIVE, coe_id)  # a failed one too: its error file is written by the finalizer
        await pipe.execute()
        if status == "failed":
            await self._finalize(coe_id, "failed")
            return await self.retrieve(batch_id)
        return batch

    async def _object(self, coe_id: str) -> dict[str, Any]:
        raw = await self.redis.hget(_batch_key(coe_id), "object")
        if raw is None:
            raise NotFound(f"No such Batch object: batch_{coe_id}")
        batch: dict[str, Any] = json.loads(raw)
        return batch

    async def _save(self, coe_id: str, batch: dict[str, Any]) -> None:
        await self.redis.hset(_batch_key(coe_id), "object", json.dumps(batch))

    async def _lines(self, coe_id: str) -> list[Line]:
        raw = await self.redis.hget(_batch_key(coe_id), "lines")
        return [Line(d["line"], d["custom_id"], d["code"], d["message"]) for d in json.loads(raw or "[]")]

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        coe_id = _coe_id(batch_id)
        batch = await self._object(coe_id)
        if batch["status"] not in FINAL:
            stats = await self.redis.hgetall(keys.batch(coe_id, "stats"))
            done = int(stats.get(b"items_done", 0))
            failed = int(stats.get(b"items_failed", 0))
            refused = sum(1 for line in await self._lines(coe_id) if line.code)
            batch["request_counts"] = {
                "total": batch["request_counts"]["total"],
                "completed": done,
                "failed": failed + refused,
            }
        return batch

    async def list(self, after: str | None, limit: int) -> dict[str, Any]:
        start = 0
        if after is not None:
            rank: Any = await self.redis.zrevrank(BATCHES, after)
            if rank is None:
                raise NotFound(f"No such Batch object: {after}")
            start = rank + 1
        found: Any = await self.redis.zrevrange(BATCHES, start, start + limit)
        ids = [_text(i) for i in found]
        data = [await self.retrieve(i) for i in ids[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(ids) > limit,
        }

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        coe_id = _coe_id(batch_id)
        batch = await self._object(coe_id)
        if batch["status"] in FINAL or batch["status"] == "cancelling":
            if batch["status"] in ("cancelled", "cancelling"):
                return await self.retrieve(batch_id)
            raise InvalidRequest(
                f"Cannot cancel a batch with status {batch['status']!r}.", None, "invalid_state"
            )
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        await self._save(coe_id, batch)
        await self.store.cancel(coe_id, "cancelled")
        return await self.retrieve(batch_id)

    # --- the finalizer ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch the active batches until cancelled: expire, stop and finalize them."""
        while True:
            try:
                for raw in await self.redis.smembers(ACTIVE):
                    await self._check(_text(raw))
            except RedisConnectionError as err:
                log.warning("batch api: redis unreachable (%s)", err)
            except CoeError as err:
                log.error("batch api: %s", err)
            await asyncio.sleep(self.poll_s)

    async def _check(self, coe_id: str) -> None:
        batch = await self._object(coe_id)
        if batch["status"] in FINAL:
            await self._finalize(coe_id, batch["status"])
            return
        meta = await self.redis.hgetall(keys.batch(coe_id))
        state = _text(meta.get(b"status", b"running"))
        reason = _text(meta[b"cancel"]) if b"cancel" in meta else None
        if state == "done":  # asked to cancel while its last lines finished: cancelled, as OpenAI
            await self._finalize(coe_id, "cancelled" if batch["status"] == "cancelling" else "completed")
        elif state == "cancelled":
            await self._finalize(coe_id, "expired" if reason == "expired" else "cancelled")
        elif reason is None and time.time() >= batch["expires_at"]:
            log.info("batch %s: completion window over; expiring", coe_id)
            await self.store.cancel(coe_id, "expired")
        elif reason is not None and not await self.redis.exists(keys.driver_lease(coe_id)):
            await self.store.finish(coe_id, "cancelled")  # nobody drives it: stop it here

    async def _finalize(self, coe_id: str, final: str) -> None:
        """Write the output and error files and set the final status (idempotent)."""
        batch = await self._object(coe_id)
        lines = await self._lines(coe_id)
        outputs = await self.store.outputs(coe_id)
        now = int(time.time())
        done, failed = [], []
        for line in lines:
            output = outputs.get(line.custom_id or "") if line.code is None else None
            if line.code is not None:
                failed.append(_error_line(coe_id, line, line.code, line.message or ""))
            elif output is None:
                code, message = LATE.get(final, LATE["cancelled"])
                failed.append(_error_line(coe_id, line, code, message))
            elif output.get("error"):
                failed.append(_error_line(coe_id, line, "server_error", str(output["error"])))
            else:
                done.append(_output_line(coe_id, line, batch["model"] or "", output, batch["created_at"]))
        if done and not batch["output_file_id"]:
            meta = await self.create_file(
                _jsonl(done), "batch_output.jsonl", "batch_output", f"file-{coe_id}-output"
            )
            batch["output_file_id"] = meta["id"]
        if failed and not batch["error_file_id"]:
            meta = await self.create_file(
                _jsonl(failed), "batch_errors.jsonl", "batch_output", f"file-{coe_id}-errors"
            )
            batch["error_file_id"] = meta["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(done), "failed": len(failed)}
        if batch["status"] not in FINAL:
            batch["finalizing_at"] = batch["finalizing_at"] or now
            batch["status"] = final
            batch[f"{final}_at"] = now
        await self._save(coe_id, batch)
        await self.redis.srem(ACTIVE, coe_id)
        log.info("batch %s: %s (%d answered, %d in the error file)", coe_id, final, len(done), len(failed))
