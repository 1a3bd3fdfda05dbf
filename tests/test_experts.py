"""Experts: real llama.cpp servers started and stopped by coe, the streaming HTTP client (chat and
completions), the litellm path, the wrappers (timeout, retry, concurrency limit, meter) and the pool."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from conftest import MODEL_CACHE, alive, wait_gone

from coe.config import ExpertConfig, Settings, load_experts
from coe.errors import ExpertError, ExpertRejected, ExpertTimeout, LaunchError, UserError
from coe.experts.base import ExpertClient
from coe.experts.launch import LlamaCppServer
from coe.experts.litellm_client import LiteLLMExpert
from coe.experts.models import resolve_model
from coe.experts.openai_http import OpenAIHTTPExpert
from coe.experts.pool import ExpertPool
from coe.experts.prompting import render_prompt, with_system_prompt
from coe.experts.wrappers import LimitExpert, MeteredExpert, RetryExpert, TimeoutExpert, wrap
from coe.types import Chunk, ExpertRequest, Message, Usage

pytestmark = pytest.mark.asyncio(loop_scope="module")
ASK: list[Message] = [{"role": "user", "content": "What is the capital of France?"}]


def request(max_tokens: int = 16) -> ExpertRequest:
    return ExpertRequest(ASK, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def configs() -> dict[str, ExpertConfig]:
    return {e.name: e for e in load_experts(Settings.load().experts_file)}


# --- a launcher on its own ----------------------------------------------------------------------------


async def test_llamacpp_server_start_stop(tmp_path: Path, configs: dict[str, ExpertConfig]) -> None:
    model = resolve_model(configs["smollm2"].model, MODEL_CACHE)
    server = LlamaCppServer("t-smollm2", model, log_dir=tmp_path, context_size=512, parallel=1)
    assert not server.running
    with pytest.raises(LaunchError):
        _ = server.base_url
    url = await server.start()
    try:
        pid = server.pid
        assert pid is not None and alive(pid) and server.running
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert await server.start() == url, "starting a running server is a no-op"
        stats = server.stats.as_dict()
        assert stats["loads"] == 1 and stats["load_s"] > 0 and stats["resident"] is True
        async with httpx.AsyncClient() as http:
            assert (await http.get(url.removesuffix("/v1") + "/health")).status_code == 200
            models = (await http.get(url + "/models")).json()
        assert "t-smollm2" in str(models), "the server answers to the expert's name"
    finally:
        await server.stop()
    assert not server.running and not alive(pid)
    stats = server.stats.as_dict()
    assert stats["resident"] is False and stats["resident_s"] > 0
    assert "READY" in server.log_path.read_text()


async def test_launch_failure_is_a_launch_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"GGUF but not really")
    server = LlamaCppServer("broken", str(bogus), log_dir=tmp_path, start_timeout_s=60)
    with pytest.raises(LaunchError, match="broken"):
        await server.start()
    assert not server.running
    assert server.stats.loads == 0


async def test_server_killed_mid_call(tmp_path: Path, configs: dict[str, ExpertConfig]) -> None:
    """An expert whose server dies fails with ExpertError, in flight and afterwards; never ''."""
    config = configs["smollm2"]
    server = LlamaCppServer(
        "doomed", resolve_model(config.model, MODEL_CACHE), log_dir=tmp_path, context_size=1024, parallel=1
    )
    url = await server.start()
    client = wrap(OpenAIHTTPExpert(config, url), timeout_s=60, retries=1, max_concurrency=1)
    try:
        long_answer = ExpertRequest(
            [{"role": "user", "content": "Write a very long story about a lighthouse keeper, in detail."}],
            max_tokens=1000,
        )
        in_flight = asyncio.create_task(client.complete(long_answer))
        await asyncio.sleep(0.3)  # the request is on the wire; the answer needs many seconds more
        assert not in_flight.done()
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)
        with pytest.raises(ExpertError) as caught:
            await in_flight
        assert caught.value.expert == "smollm2"
        with pytest.raises(ExpertError):
            await client.complete(request())
        assert client.meter.calls == 2 and client.meter.failures == 2
    finally:
        await client.aclose()
        await server.stop()
    assert not server.running


# --- the pool over the default experts -------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(
    tmp_path_factory: pytest.TempPathFactory, configs: dict[str, ExpertConfig]
) -> AsyncIterator[ExpertPool]:
    state = tmp_path_factory.mktemp("pool")
    settings = Settings(state_dir=state, models_dir=MODEL_CACHE, default_max_tokens=16)
    pool = ExpertPool([configs["smollm2"], configs["gemma3-270m"]], settings)
    await pool.start()
    pids = [launcher.pid for launcher in pool.launchers.values()]
    try:
        yield pool
    finally:
        await pool.stop()
    assert all(pid is not None for pid in pids)
    assert not wait_gone([pid for pid in pids if pid is not None], timeout_s=5)
    assert all(not launcher.running for launcher in pool.launchers.values())


async def test_pool_started_every_launched_expert(pool: ExpertPool) -> None:
    assert pool.names == ["smollm2", "gemma3-270m"]
    assert set(pool.launchers) == {"smollm2", "gemma3-270m"}
    assert "smollm2" in pool and "nope" not in pool
    with pytest.raises(UserError, match="unknown expert"):
        pool.client("nope")
    for name, launcher in pool.launchers.items():
        assert launcher.running, name
        assert launcher.log_path == pool.settings.state_dir / "logs" / f"{name}.log"


async def test_chat_streams(pool: ExpertPool, configs: dict[str, ExpertConfig]) -> None:
    raw = OpenAIHTTPExpert(configs["smollm2"], pool.launchers["smollm2"].base_url)
    pieces: list[str] = []
    try:
        completion = await raw.complete(request(), pieces.append)
    finally:
        await raw.aclose()
    assert len(pieces) > 1, "the answer arrives piece by piece"
    assert "".join(pieces).strip() == completion.content
    assert completion.content and completion.content == completion.content.strip()
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.usage.latency_s > 0
    price = configs["smollm2"].price
    expected = (
        completion.usage.prompt_tokens * price.prompt + completion.usage.completion_tokens * price.completion
    ) / 1e6
    assert completion.usage.cost == pytest.approx(expected)
    assert completion.finish_reason in ("stop", "length")


async def test_finish_reason_is_the_experts(pool: ExpertPool) -> None:
    cut = await pool.client("smollm2").complete(
        ExpertRequest([{"role": "user", "content": "Tell me a long story about a cat."}], max_tokens=4)
    )
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 4


async def test_context_overflow_is_a_rejection_not_retried(pool: ExpertPool) -> None:
    meter = pool.meters["smollm2"]
    calls = meter.calls
    too_long: list[Message] = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ExpertRejected) as caught:
        await pool.client("smollm2").complete(ExpertRequest(too_long, max_tokens=8))
    assert caught.value.code == "context_length_exceeded" and caught.value.status == 400
    assert meter.calls == calls + 1


async def test_upstream_refusal_maps_to_a_rejection(
    pool: ExpertPool, configs: dict[str, ExpertConfig]
) -> None:
    """``backend: openai`` has no tokenizer pre-check: the server's own 400 becomes ExpertRejected."""
    url = pool.launchers["smollm2"].base_url
    config = configs["smollm2"].model_copy(update={"backend": "openai", "model": "smollm2", "endpoint": url})
    client = OpenAIHTTPExpert(config, url)
    too_long: list[Message] = [{"role": "user", "content": "word " * 5000}]
    try:
        with pytest.raises(ExpertRejected) as caught:
            await client.complete(ExpertRequest(too_long, max_tokens=8))
    finally:
        await client.aclose()
    assert caught.value.status == 400 and caught.value.code == "context_length_exceeded"
    assert "context" in str(caught.value)


async def test_litellm_backend(pool: ExpertPool, configs: dict[str, ExpertConfig]) -> None:
    """``backend: litellm`` goes through litellm's adapters (here its OpenAI one, to llama.cpp)."""
    config = configs["smollm2"].model_copy(
        update={
            "backend": "litellm",
            "model": "openai/smollm2",
            "endpoint": pool.launchers["smollm2"].base_url,
        }
    )
    client = LiteLLMExpert(config, config.endpoint)
    pieces: list[str] = []
    completion = await client.complete(request(), pieces.append)
    assert completion.content and "".join(pieces).strip() == completion.content
    assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 16
    assert completion.finish_reason in ("stop", "length")


async def test_completions_api(pool: ExpertPool) -> None:
    """gemma3-270m is a base model: coe renders the conversation into its prompt template."""
    completion = await pool.client("gemma3-270m").complete(request())
    assert completion.content.strip()
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 16


async def test_pool_stats(pool: ExpertPool) -> None:
    failures = pool.meters["smollm2"].failures
    await pool.client("smollm2").complete(request(max_tokens=8))
    stats = pool.stats()
    assert set(stats) == {"smollm2", "gemma3-270m"}
    smollm2 = stats["smollm2"]
    assert smollm2["loads"] == 1 and smollm2["load_s"] > 0 and smollm2["resident"] is True
    assert smollm2["state"] == "ready" and smollm2["pid"] == pool.launchers["smollm2"].pid
    assert smollm2["calls"] >= 1 and smollm2["failures"] == failures
    assert smollm2["completion_tokens"] > 0 and smollm2["cost"] > 0
    assert stats["gemma3-270m"]["calls"] >= 1


async def test_render_prompt() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert render_prompt(messages, "{prompt}\nAnswer:") == "Be brief.\n\nQ1\n\nAnswer: A1\n\nQ2\nAnswer:"


async def test_with_system_prompt() -> None:
    assert with_system_prompt(ASK, None) == ASK
    assert with_system_prompt(ASK, "S") == [{"role": "system", "content": "S"}, *ASK]
    own: list[Message] = [{"role": "system", "content": "Mine."}, *ASK]
    assert with_system_prompt(own, "S") == [{"role": "system", "content": "S\n\nMine."}, *ASK]


# --- wrappers, over a tiny ExpertClient of our own -------------------------------------------------------


class Scripted(ExpertClient):
    """Answers "ok" after ``delay`` seconds; the first ``failures`` calls raise ``error``."""

    def __init__(self, delay: float = 0.0, failures: int = 0, error: Exception | None = None) -> None:
        self.name = "scripted"
        self.delay = delay
        self.failures = failures
        self.error = error or ExpertError("scripted", "boom")
        self.calls = 0
        self.active = 0
        self.peak = 0

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.calls <= self.failures:
                raise self.error
            yield Chunk("ok", Usage(3, 2, 0.5, self.delay), "stop")
        finally:
            self.active -= 1


class BreaksMidStream(ExpertClient):
    """Streams one piece of text, then fails."""

    name = "breaks"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        try:
            yield Chunk("The answer")
            await asyncio.sleep(0)
            raise ExpertError(self.name, "connection lost")
        finally:
            self.closed += 1


async def test_timeout() -> None:
    client = TimeoutExpert(Scripted(delay=5), seconds=0.05)
    assert client.name == "scripted"
    with pytest.raises(ExpertTimeout, match=r"no answer within 0\.05s"):
        await client.complete(request())


async def test_retry_then_success() -> None:
    inner = Scripted(failures=2)
    completion = await RetryExpert(inner, retries=2, backoff_s=0.001).complete(request())
    assert completion.content == "ok" and inner.calls == 3


async def test_retry_gives_up_with_expert_error() -> None:
    inner = Scripted(failures=10)
    with pytest.raises(ExpertError, match="boom"):
        await RetryExpert(inner, retries=2, backoff_s=0.001).complete(request())
    assert inner.calls == 3


async def test_retry_wraps_other_upstream_errors() -> None:
    inner = Scripted(failures=10, error=LaunchError("server gone"))
    with pytest.raises(ExpertError, match="server gone"):
        await RetryExpert(inner, retries=1, backoff_s=0.001).complete(request())
    assert inner.calls == 2


async def test_user_errors_are_not_retried() -> None:
    inner = Scripted(failures=10, error=UserError("bad request"))
    with pytest.raises(UserError):
        await RetryExpert(inner, retries=3, backoff_s=0.001).complete(request())
    assert inner.calls == 1


async def test_retry_never_after_text_streamed() -> None:
    inner = BreaksMidStream()
    seen: list[str] = []
    with pytest.raises(ExpertError, match="connection lost"):
        await RetryExpert(inner, retries=3, backoff_s=0.001).complete(request(), seen.append)
    assert inner.calls == 1 and seen == ["The answer"]


async def test_rejections_are_not_retried() -> None:
    inner = Scripted(failures=10, error=ExpertRejected("scripted", "HTTP 400: too long", 400))
    with pytest.raises(ExpertRejected):
        await RetryExpert(inner, retries=3, backoff_s=0.001).complete(request())
    assert inner.calls == 1


async def test_closing_a_wrapped_stream_closes_the_inner_one() -> None:
    inner = BreaksMidStream()
    client = wrap(inner, timeout_s=5, retries=1, max_concurrency=1)
    stream = client.stream(request())
    assert (await anext(stream)).text == "The answer"
    await stream.aclose()
    assert inner.closed == 1
    # the concurrency slot was given back: another call gets through at once
    async with asyncio.timeout(1):
        assert (await anext(client.stream(request()))).text == "The answer"


async def test_limit_bounds_concurrency() -> None:
    inner = Scripted(delay=0.02)
    client = LimitExpert(inner, limit=2)
    results = await asyncio.gather(*(client.complete(request()) for _ in range(7)))
    assert [r.content for r in results] == ["ok"] * 7
    assert inner.peak == 2


async def test_meter() -> None:
    client = MeteredExpert(Scripted(failures=1))
    with pytest.raises(ExpertError):
        await client.complete(request())
    await client.complete(request())
    await client.complete(request())
    assert client.meter.as_dict() == {
        "calls": 3,
        "failures": 1,
        "prompt_tokens": 6,
        "completion_tokens": 4,
        "cost": 1.0,
        "latency_s": 0.0,
    }


async def test_standard_stack_retries_timeouts() -> None:
    inner = Scripted(delay=5)
    client = wrap(inner, timeout_s=0.05, retries=1, max_concurrency=1)
    with pytest.raises(ExpertTimeout):
        await client.complete(request())
    assert inner.calls == 2
    assert client.meter.failures == 1
