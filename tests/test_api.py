"""The HTTP API end to end: the official ``openai`` client against ``coe serve`` (``live_server``),
error bodies through httpx, bearer auth and client disconnects on an in-process app."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from conftest import REPO
from fastapi import FastAPI

from coe.api.app import create_app
from coe.config import ExpertConfig, Settings
from coe.service import Service

DEFAULT_EXPERTS = ["smollm2", "smollm2-warm", "gemma3-270m"]
ASK = [{"role": "user", "content": "Name one colour of the rainbow."}]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live_server + "/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def trace_of(response: openai.BaseModel) -> dict[str, Any]:
    extra = response.model_extra or {}
    assert "coe" in extra, f"no coe trace in {response}"
    trace: dict[str, Any] = extra["coe"]
    return trace


def test_models_list(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert {"single", "vote"} <= set(ids)


def test_single(client: openai.OpenAI, timings: dict[str, float]) -> None:
    started = time.monotonic()
    response = client.chat.completions.create(model="single", messages=ASK, max_tokens=MAX_TOKENS)
    timings["first answer, single"] = time.monotonic() - started
    assert response.object == "chat.completion"
    assert response.model == "single"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content and response.choices[0].message.content.strip()
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= MAX_TOKENS
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    trace = trace_of(response)
    assert trace["graph"] == "single"
    assert [call["expert"] for call in trace["calls"]] == ["smollm2"]
    assert trace["usage"]["completion_tokens"] == response.usage.completion_tokens


def test_vote(client: openai.OpenAI, timings: dict[str, float]) -> None:
    started = time.monotonic()
    response = client.chat.completions.create(
        model="vote", messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=MAX_TOKENS
    )
    timings["first answer, vote"] = time.monotonic() - started
    content = response.choices[0].message.content
    assert content and content.strip()
    trace = trace_of(response)
    assert trace["graph"] == "vote"
    assert sorted(call["expert"] for call in trace["calls"]) == sorted(DEFAULT_EXPERTS)
    answers = {call["answer"] for call in trace["calls"] if "error" not in call}
    assert content in answers  # a vote picks one of the candidates, it does not write its own
    assert trace["aggregate"], "the vote is recorded"
    assert response.usage is not None
    assert response.usage.completion_tokens == sum(c.get("completion_tokens", 0) for c in trace["calls"])


def test_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="single", messages=ASK, max_tokens=MAX_TOKENS, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == []
    trace = trace_of(last)
    assert trace["graph"] == "single"
    assert [call["answer"] for call in trace["calls"]] == [content.strip()]
    assert finishes == [trace["calls"][0]["finish_reason"]], "the expert's own finish reason"
    assert last.usage is not None and last.usage.completion_tokens > 0
    assert [c for c in chunks if "coe" in (c.model_extra or {})] == [last]


def test_stream_raw_sse(live_server: str) -> None:
    """The wire format itself: ``data:`` events, the trace chunk just before ``data: [DONE]``."""
    body = {"model": "single", "messages": ASK, "max_tokens": MAX_TOKENS, "stream": True}
    with httpx.stream("POST", live_server + "/v1/chat/completions", json=body, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"] == [] and final["coe"]["graph"] == "single"


def test_healthz(live_server: str) -> None:
    response = httpx.get(live_server + "/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {"single", "vote"} <= set(body["graphs"])
    assert list(body["experts"]) == DEFAULT_EXPERTS
    for stats in body["experts"].values():
        assert stats["loads"] == 1 and stats["load_s"] > 0 and stats["resident"] is True


@pytest.mark.parametrize(
    ("request_body", "status", "code", "param"),
    [
        pytest.param({"model": "single"}, 400, "invalid_request", "messages", id="missing-messages"),
        pytest.param({"model": "nope", "messages": ASK}, 404, "model_not_found", "model", id="unknown-model"),
        pytest.param(
            {"model": "single", "messages": ASK, "temperature": "hot"},
            400,
            "invalid_request",
            "temperature",
            id="wrong-type",
        ),
        pytest.param(
            {"model": "single", "messages": [{"role": "system", "content": "Be brief."}]},
            400,
            "invalid_request",
            "messages",
            id="no-user-turn",
        ),
        pytest.param(
            {"model": "single", "messages": [{"role": "robot", "content": "hi"}]},
            400,
            "invalid_request",
            "messages.0.role",
            id="bad-role",
        ),
        pytest.param(
            {"model": "single", "messages": ASK, "max_tokens": 0},
            400,
            "invalid_request",
            "max_tokens",
            id="max-tokens-zero",
        ),
        pytest.param(b"{not json", 400, "invalid_request", None, id="unparsable-json"),
        pytest.param([1, 2], 400, "invalid_request", None, id="not-an-object"),
    ],
)
def test_errors(live_server: str, request_body: Any, status: int, code: str, param: str | None) -> None:
    content = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    response = httpx.post(
        live_server + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


def test_error_unparsable_json_message(live_server: str) -> None:
    response = httpx.post(
        live_server + "/v1/chat/completions",
        content=b'{"model": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "parse the JSON" in response.json()["error"]["message"]


def test_unknown_path_is_an_openai_error(live_server: str) -> None:
    response = httpx.get(live_server + "/v1/nope")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}


def test_openai_client_raises_on_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-graph", messages=ASK)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="single", messages=[])


# --- In-process app: bearer auth and client disconnects --------------------------------------------
# The app's only expert is the live server's `single` graph, reached as an OpenAI endpoint: one coe
# fronting another, so these tests start no model server of their own.


@pytest.fixture(scope="module")
def single_graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the shipped `single` graph, so these tests do not depend on the other graphs' artifacts."""
    folder = tmp_path_factory.mktemp("graphs")
    shutil.copy(REPO / "graphs" / "single.yaml", folder / "single.yaml")
    return folder


def _app(settings: Settings, live_server: str) -> FastAPI:
    upstream = ExpertConfig(
        name="single",
        backend="openai",
        model="single",
        endpoint=live_server + "/v1",
        params_b=0.135,
        retries=0,
    )
    return create_app(settings, lambda s: Service(s, experts=[upstream], start_redis=False))


@pytest_asyncio.fixture
async def keyed_app(config_file: Path, single_graph_dir: Path, live_server: str) -> AsyncIterator[FastAPI]:
    settings = Settings.load(config_file, graphs_dir=single_graph_dir, api_keys=["key-one", "key-two"])
    app = _app(settings, live_server)
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.asyncio
async def test_bearer_auth(keyed_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=keyed_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
        assert (await http.get("/healthz")).status_code == 200  # probes need no key
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "key-one"}):
            response = await http.get("/v1/models", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["type"] == "authentication_error"
            response = await http.post("/v1/chat/completions", headers=headers, json={})
            assert response.status_code == 401, "auth is checked before the body"
        for key in ("key-one", "key-two"):
            response = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200
    async with openai.AsyncOpenAI(
        base_url="http://coe/v1",
        api_key="key-two",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    ) as client:
        assert "single" in [m.id async for m in client.models.list()]
    async with openai.AsyncOpenAI(
        base_url="http://coe/v1",
        api_key="wrong",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()


@pytest_asyncio.fixture
async def open_app(config_file: Path, single_graph_dir: Path, live_server: str) -> AsyncIterator[FastAPI]:
    app = _app(Settings.load(config_file, graphs_dir=single_graph_dir), live_server)
    async with app.router.lifespan_context(app):
        yield app


def _http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"coe"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("coe", 80),
        "state": {},
    }


@pytest.mark.asyncio
async def test_client_disconnect_mid_stream(open_app: FastAPI) -> None:
    """The client goes away after the first event: the app stops streaming and returns cleanly."""
    body = json.dumps({"model": "single", "messages": ASK, "max_tokens": MAX_TOKENS, "stream": True}).encode()
    sent: list[dict[str, Any]] = []
    first_event = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await first_event.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_event.set()
            await asyncio.Event().wait()  # the socket is gone: this write never completes

    await asyncio.wait_for(open_app(_http_scope("/v1/chat/completions"), receive, send), timeout=300)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 1, "nothing is sent after the disconnect"
    assert bodies[0]["body"].startswith(b"data: ")
    assert bodies[0].get("more_body") is True
