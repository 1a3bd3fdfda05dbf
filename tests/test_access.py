"""Access: bearer keys on ``/v1`` and ``/metrics`` (never on probes and the web page), OpenAI-style
401 and 429 bodies, the per-key token bucket in a real Redis, ``coe serve`` refusing to listen
beyond loopback without keys, and request fields that can never steer an expert.

The in-process apps here front ``Upstream``: a real OpenAI-compatible HTTP server (uvicorn, in a
thread) that answers at once and records what it was sent, so no model server starts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from conftest import REPO, coe, write_settings
from fastapi import FastAPI

from coe.api.app import create_app
from coe.config import ExpertConfig, RateLimit, Settings
from coe.experts.launch import free_port
from coe.service import Service

KEYS = ["key-one", "key-two"]
ASK = [{"role": "user", "content": "Say hi."}]
ANSWER = "Hello there."


class Upstream:
    """An OpenAI-compatible server answering every chat completion with ``ANSWER`` (streamed, with
    usage), recording each request body; the first ``fail`` calls get HTTP 500."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, port=port, log_level="warning", lifespan="off", interface="asgi3")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "upstream did not start"
            time.sleep(0.02)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(json.loads(body or b"{}"))
        if self.fail > 0:
            self.fail -= 1
            await self._send(send, 500, b'{"error": {"message": "boom"}}', b"application/json")
            return
        await self._send(send, 200, self._events(), b"text/event-stream")

    @staticmethod
    def _events() -> bytes:
        base = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": "up"}
        events = [
            {**base, "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            },
        ]
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"

    @staticmethod
    async def _send(send: Any, status: int, body: bytes, kind: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def upstream_app(folder: Path, upstream: Upstream, **settings: Any) -> FastAPI:
    """``create_app`` serving the shipped ``single`` graph over one expert behind ``upstream``."""
    graphs = folder / "graphs"
    graphs.mkdir(exist_ok=True)
    (graphs / "single.yaml").write_text((REPO / "graphs" / "single.yaml").read_text())
    expert = ExpertConfig(
        name="up", backend="openai", model="up-model", endpoint=upstream.url, params_b=1.0, retries=1
    )
    config = Settings.load(write_settings(folder, graphs_dir=graphs), **settings)
    return create_app(config, lambda s: Service(s, experts=[expert], start_redis=False))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def keyed(tmp_path: Path, upstream: Upstream, redis_server: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with keys and a rate limit of 2 requests at once, refilled at 6 a minute."""
    limit = RateLimit(requests_per_minute=6, burst=2)
    app = upstream_app(tmp_path, upstream, api_keys=KEYS, rate_limit=limit, redis_url=redis_server)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
            yield http


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.asyncio(loop_scope="module")
async def test_keys_guard_v1_and_metrics_but_not_probes_or_the_page(keyed: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/static/style.css"):
        assert (await keyed.get(path)).status_code == 200, path
    for path in ("/v1/models", "/metrics"):
        for headers in ({}, bearer("wrong"), {"authorization": KEYS[0]}):
            error = assert_openai_error(await keyed.get(path, headers=headers), 401, "invalid_api_key")
            assert error["type"] == "authentication_error"
    missing = await keyed.post("/v1/chat/completions", json={"model": "single", "messages": ASK})
    assert "None was sent" in assert_openai_error(missing, 401, "invalid_api_key")["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    scraped = await keyed.get("/metrics", headers=bearer(KEYS[1]))
    assert scraped.status_code == 200 and "coe_requests_total" in scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")


@pytest.mark.asyncio(loop_scope="module")
async def test_rate_limit_is_per_key_with_retry_after(keyed: httpx.AsyncClient) -> None:
    """Two requests at once, then 429 with Retry-After (one token per 10 s); the other key has its
    own bucket; /metrics and probes are not limited."""
    statuses = [(await keyed.get("/v1/models", headers=bearer(KEYS[0]))).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = await keyed.get("/v1/models", headers=bearer(KEYS[0]))
    error = assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert error["type"] == "requests" and "6 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert (await keyed.get("/v1/models", headers=bearer(KEYS[1]))).status_code == 200
    for _ in range(3):
        assert (await keyed.get("/metrics", headers=bearer(KEYS[0]))).status_code == 200
        assert (await keyed.get("/healthz")).status_code == 200
    metrics = (await keyed.get("/metrics", headers=bearer(KEYS[0]))).text
    assert "coe_rate_limited_requests_total 2.0" in metrics


@pytest.mark.asyncio(loop_scope="module")
async def test_the_bucket_refills(tmp_path: Path, upstream: Upstream, redis_server: str) -> None:
    limit = RateLimit(requests_per_minute=600, burst=1)  # a token every 0.1 s
    app = upstream_app(tmp_path, upstream, api_keys=["refill"], rate_limit=limit, redis_url=redis_server)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
            assert (await http.get("/v1/models", headers=bearer("refill"))).status_code == 200
            assert (await http.get("/v1/models", headers=bearer("refill"))).status_code == 429
            await asyncio.sleep(0.5)  # 5 tokens' worth, capped at the burst of 1
            assert (await http.get("/v1/models", headers=bearer("refill"))).status_code == 200


@pytest.mark.asyncio(loop_scope="module")
async def test_request_fields_never_steer_the_expert(tmp_path: Path, upstream: Upstream) -> None:
    """Unknown fields naming upstreams, models or credentials are ignored: the expert is called at
    its configured URL with its configured model, and none of them reaches its request body."""
    app = upstream_app(tmp_path, upstream)
    steer = {
        "api_base": "http://evil.example/v1",
        "base_url": "http://evil.example/v1",
        "endpoint": "http://evil.example/v1",
        "api_key": "stolen",
        "model_path": "/etc/passwd",
        "experts": [{"name": "x", "backend": "openai", "endpoint": "http://evil.example/v1"}],
        "extra_body": {"model": "/etc/passwd"},
    }
    before = len(upstream.bodies)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
            body = {"model": "single", "messages": [{"role": "user", "content": "Say hi.", **steer}], **steer}
            response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == ANSWER
    sent = upstream.bodies[before:]
    assert len(sent) == 1
    assert sent[0]["model"] == "up-model"
    assert sent[0]["messages"] == [{"role": "user", "content": "Say hi."}]
    assert not set(steer) & set(sent[0]), sent[0]
    assert "evil" not in json.dumps(sent[0]) and "passwd" not in json.dumps(sent[0])


@pytest.mark.asyncio(loop_scope="module")
async def test_rate_limit_needs_redis(tmp_path: Path, upstream: Upstream) -> None:
    app = upstream_app(tmp_path, upstream, rate_limit=RateLimit(requests_per_minute=1))
    with pytest.raises(Exception, match="rate_limit: needs Redis"):
        async with app.router.lifespan_context(app):
            pass


def test_serve_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    config = write_settings(tmp_path)
    done = coe("serve", "--config", str(config), "--host", "0.0.0.0", "--port", "1", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr
    assert "--insecure-no-auth" in done.stderr
    assert done.stderr.count("\n") == 1, "one line"


def test_rate_limit_settings_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "coe.yaml"
    bad.write_text("rate_limit: {requests_per_minute: 0, burst: 5, per: key}\n")
    with pytest.raises(Exception) as caught:
        Settings.load(bad)
    message = str(caught.value)
    assert "rate_limit.requests_per_minute" in message and "rate_limit.per" in message
