"""OpenAI's Batch API against a real ``coe serve`` (its own Redis, real llama.cpp experts), driven
through the official ``openai`` client: files, batches, output and error files, list pagination,
cancellation, bad input; and a ``coe serve`` SIGKILLed mid-batch whose restart completes it with
every line answered exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis
from batch_support import until
from conftest import wait_gone
from serve_support import Served

from coe.batch.openai_api import BatchAPI, Line
from coe.batch.store import BatchItem

FAST = {"batch_lease_s": 2, "batch_visibility_timeout_s": 3, "default_max_tokens": 8, "max_body_bytes": 65536}


def line(custom_id: str, text: str, model: str = "single", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, **body},
    }


def jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def wait_final(client: openai.OpenAI, batch_id: str, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.3)


def read_file(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("batchapi"), **FAST)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def test_batch_end_to_end_with_the_openai_client(client: openai.OpenAI, tmp_path: Path) -> None:
    good = [line(f"req-{i}", f"Say the number {i}.") for i in range(4)]
    bad = [
        "{not json",
        {**line("wrong-url", "hi"), "url": "/v1/completions"},
        line("no-graph", "hi", model="gpt-4o"),
        line("req-0", "a second line with the same custom_id"),
        line("tools", "hi", tools=[{"type": "function", "function": {"name": "f"}}]),
    ]
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl([good[0], bad[0], good[1], bad[1], good[2], bad[2], bad[3], good[3], bad[4]]))
    uploaded = client.files.create(file=path, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    assert client.files.content(uploaded.id).content == path.read_bytes()
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    assert batch.status == "in_progress" and batch.metadata == {"run": "e2e"}
    assert batch.request_counts is not None and batch.request_counts.total == 9
    assert batch.expires_at == batch.created_at + 86400
    final = wait_final(client, batch.id)
    assert final.status == "completed" and final.completed_at is not None
    assert final.request_counts is not None
    assert (final.request_counts.completed, final.request_counts.failed) == (4, 5)

    outputs = read_file(client, final.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == [f"req-{i}" for i in range(4)]
    for output in outputs:
        assert output["error"] is None and output["response"]["status_code"] == 200
        body = output["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "single"
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] > 0
        assert (
            body["usage"]["total_tokens"]
            == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        )
        assert body["coe"]["graph"] == "single" and body["coe"]["calls"][0]["expert"] == "smollm2"

    errors = {(e["custom_id"], e["error"]["code"]) for e in read_file(client, final.error_file_id)}
    assert errors == {
        (None, "invalid_json"),
        ("wrong-url", "invalid_url"),
        ("no-graph", "model_not_found"),
        ("req-0", "duplicate_custom_id"),
        ("tools", "unsupported_parameter"),
    }
    assert all(
        e["response"] is None and e["error"]["message"] for e in read_file(client, final.error_file_id)
    )


def test_list_pagination_and_cancel(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl([line(f"c{i}", f"Count to {i + 30}.", max_tokens=48) for i in range(8)]))
    file_id = client.files.create(file=path, purpose="batch").id
    first = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    second = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = client.batches.cancel(second.id)
    assert cancelling.status in ("cancelling", "cancelled")
    page = client.batches.list(limit=1)
    assert [b.id for b in page.data] == [second.id] and page.has_more
    after = client.batches.list(limit=1, after=second.id)
    assert [b.id for b in after.data] == [first.id]
    cancelled = wait_final(client, second.id, timeout_s=60)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    lines = read_file(client, cancelled.error_file_id)
    done = read_file(client, cancelled.output_file_id) if cancelled.output_file_id else []
    assert len(lines) + len(done) == 8, "every line is in one of the files"
    assert {e["error"]["code"] for e in lines} == {"batch_cancelled"}
    assert wait_final(client, first.id).status == "completed", "cancelling one batch leaves the other"
    with pytest.raises(openai.BadRequestError):  # as OpenAI: a completed batch cannot be cancelled
        client.batches.cancel(first.id)


def test_bad_requests_get_openai_errors(served: Served, client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl([line("a", "hi")]))
    file_id = client.files.create(file=path, purpose="batch").id
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_value" and bad.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=path, purpose="fine-tune")
    big = httpx.post(
        served.url + "/v1/files",
        files={"file": ("big.jsonl", b"x" * 70000)},
        data={"purpose": "batch"},
    )
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "request_too_large" and big.json()["error"]["type"]


def test_sigkilled_api_restarts_and_completes_the_batch(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Served(tmp_path / "a", state_dir=state, **FAST)
    client = openai.OpenAI(base_url=first.url + "/v1", api_key="unused", max_retries=0)
    n = 6
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl([line(f"k{i}", f"Count from {i} to {i + 20}.", max_tokens=24) for i in range(n)]))
    file_id = client.files.create(file=path, purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 120
    while True:
        counts = client.batches.retrieve(batch.id).request_counts
        assert counts is not None
        if counts.completed >= 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert counts.completed < n, "killed mid-batch"
    children = list(first.children)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert not wait_gone(children), "its redis-server and model servers went with it"

    second = Served(tmp_path / "b", state_dir=state, **FAST)
    try:
        client = openai.OpenAI(base_url=second.url + "/v1", api_key="unused", max_retries=0)
        assert client.files.content(file_id).content == path.read_bytes(), "the file survived"
        final = wait_final(client, batch.id)
        assert final.status == "completed"
        outputs = read_file(client, final.output_file_id)
        assert sorted(o["custom_id"] for o in outputs) == sorted(f"k{i}" for i in range(n))
        assert final.error_file_id is None, "every line answered"
        assert all(o["response"]["body"]["choices"][0]["message"]["content"] for o in outputs)
    finally:
        second.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_expiry_sends_unanswered_lines_to_the_error_file(redis: aioredis.Redis) -> None:
    """The completion window ends before anyone drives the batch (no worker, no API adopter):
    it expires, and every line is in the error file as ``batch_expired``."""
    api = BatchAPI(redis, window_s=0.5, poll_s=0.1)
    items = [BatchItem(f"x{i}", [{"role": "user", "content": "hi"}]) for i in range(3)]
    lines = [Line(i + 1, f"x{i}") for i in range(3)] + [Line(4, None, "invalid_json", "not JSON")]
    batch = await api.create_batch(
        input_file_id="file-x",
        completion_window="24h",
        metadata=None,
        graph="single",
        pool=["smollm2"],
        items=items,
        lines=lines,
    )
    keeper = asyncio.create_task(api.run())
    try:

        async def expired() -> bool:
            return bool((await api.retrieve(batch["id"]))["status"] == "expired")

        await until(expired, timeout_s=30)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    final = await api.retrieve(batch["id"])
    assert final["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert final["output_file_id"] is None and final["expired_at"] >= final["expires_at"]
    errors = [json.loads(x) for x in (await api.file_content(final["error_file_id"])).splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("x0", "batch_expired"),
        ("x1", "batch_expired"),
        ("x2", "batch_expired"),
        (None, "invalid_json"),
    ]
