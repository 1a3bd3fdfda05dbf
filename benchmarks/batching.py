"""Load-per-item versus the batch scheduler, on one MCQ workload over the three default experts.

    .venv/bin/python benchmarks/batching.py [--items 60] [--max-tokens 4] [--load-s 30]

Workload: the first ``--items`` MMLU-Pro questions of the committed slice, each asked of two of the
three default llama.cpp experts (a pair chosen per question by hashing its text, so every expert
gets about two thirds of the questions) and the answers voted; a memory budget of one model at
a time.

(a) naive: questions one after another; each expert call loads its model, asks, and unloads it
    (load per instance, as a gateway over non-resident experts would);
(b) scheduler: the same graph through ``coe.batch`` (local Redis, one in-process worker with a
    one-model budget): routing for every question first, then each expert's calls together.

Prints loads, the most model servers ever running at once (sampled from /proc), wall time of each
and their ratio, and a projection for 7B models whose load takes ``--load-s`` seconds: each
run's measured wall time with its measured load time replaced by loads x load-s. The machine is
shared, so timings are noisy (the mean 1-minute load average during each run is printed beside
it: this machine has 2 cores); the load counts are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from coe.batch.connect import connect
from coe.batch.driver import BatchDriver, graph_factory
from coe.batch.run import drive
from coe.batch.store import BatchItem, BatchStore
from coe.batch.worker import Worker
from coe.config import Settings, load_experts
from coe.experts.base import ExpertClient
from coe.experts.pool import ExpertPool
from coe.graph.compile import GraphPipeline
from coe.graph.loader import load_graph
from coe.pipeline import RunParams
from coe.questions.datasets import Question, load_mmlu_pro
from coe.questions.extract import LETTERS
from coe.redis_server import RedisServer
from coe.types import Chunk, ExpertRequest, Message, Messages, RouteDecision
from routers import ROUTERS
from routers.base import Router

REPO = Path(__file__).resolve().parents[1]
EXPERTS = ["smollm2", "smollm2-warm", "gemma3-270m"]
GRAPH = """\
description: two experts per question (a pair picked by hashing the question), then a vote
experts: pool
entry: route
exit: answer
nodes:
  route: {kind: route, router: bench-pair}
  experts: {kind: experts}
  vote: {kind: aggregate, aggregator: vote}
  answer: {kind: answer}
edges: [[route, experts], [experts, vote], [vote, answer]]
"""


class PairRouter(Router):
    """Two of the pool's experts per request, by a hash of its text (deterministic, balanced)."""

    name = "bench-pair"

    async def route(self, messages: Messages) -> RouteDecision:
        pool = list(self.context.experts)
        digest = int(hashlib.sha256(messages[-1]["content"].encode()).hexdigest(), 16)
        skip = digest % len(pool)
        chosen = tuple(e for i, e in enumerate(pool) if i != skip)[:2]
        return RouteDecision(chosen, chosen[0], router=self.name)


def messages(question: Question) -> list[Message]:
    options = "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(question.options))
    text = f"Question: {question.question}\nOptions:\n{options}Reply with the letter of the correct option."
    return [{"role": "user", "content": text}]


def llama_servers() -> int:
    """llama.cpp servers that are children of this process, from /proc."""
    me, count = str(os.getpid()), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z" and b"coe.experts._llama_server" in command:
            count += 1
    return count


@dataclass
class Run:
    wall_s: float = 0.0
    loads: int = 0
    load_s: float = 0.0
    calls: int = 0
    call_s: float = 0.0
    max_resident: int = 0
    per_expert: dict[str, int] = field(default_factory=dict)
    load_avg: list[float] = field(default_factory=list)  # the machine's 1-minute load, sampled

    def projected(self, load_s: float) -> float:
        return self.wall_s - self.load_s + self.loads * load_s


async def sample_resident(run: Run) -> None:
    """Every 0.2 s (a load-call-unload cycle takes seconds): model servers running, machine load."""
    while True:
        run.max_resident = max(run.max_resident, await asyncio.to_thread(llama_servers))
        run.load_avg.append(os.getloadavg()[0])
        await asyncio.sleep(0.2)


class LoadPerCall(ExpertClient):
    """Loads the expert's model for each call and unloads it after (one model at a time)."""

    def __init__(self, name: str, pool: ExpertPool, lock: asyncio.Lock, run: Run) -> None:
        self.name = name
        self.pool = pool
        self.lock = lock
        self.run = run

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        yield await self._call(request)

    async def _call(self, request: ExpertRequest) -> Chunk:
        async with self.lock:
            began = time.monotonic()
            await self.pool.start_one(self.name)
            loaded = time.monotonic()
            self.run.loads += 1
            self.run.load_s += loaded - began
            self.run.per_expert[self.name] = self.run.per_expert.get(self.name, 0) + 1
            try:
                completion = await self.pool.client(self.name).complete(request)
            finally:
                self.run.calls += 1
                self.run.call_s += time.monotonic() - loaded
                await self.pool.stop_one(self.name)
            return Chunk(completion.content, completion.usage, completion.finish_reason)


class NaiveLookup:
    def __init__(self, clients: dict[str, ExpertClient]) -> None:
        self.clients = clients

    def client(self, name: str) -> ExpertClient:
        return self.clients[name]


async def naive(settings: Settings, graph: Path, questions: list[Question], max_tokens: int) -> Run:
    run = Run()
    pool = ExpertPool([c for c in load_experts(settings.experts_file) if c.name in EXPERTS], settings)
    lock = asyncio.Lock()
    lookup = NaiveLookup({n: LoadPerCall(n, pool, lock, run) for n in EXPERTS})
    pipeline = GraphPipeline(load_graph(graph), lookup, EXPERTS, engine="direct")
    sampler = asyncio.create_task(sample_resident(run))
    began = time.monotonic()
    try:
        for i, question in enumerate(questions):
            await pipeline.run(messages(question), RunParams(max_tokens=max_tokens))
            print(f"\r  naive: {i + 1}/{len(questions)} questions, {run.loads} loads", end="", flush=True)
    finally:
        run.wall_s = time.monotonic() - began
        sampler.cancel()
        await pool.stop()
    print()
    return run


async def scheduled(settings: Settings, graph: Path, questions: list[Question], max_tokens: int) -> Run:
    run = Run()
    items = [BatchItem(str(q.question_id), messages(q)) for q in questions]
    async with RedisServer(parent_dir=settings.state_dir) as server:
        redis = connect(server.url)
        configs = [c for c in load_experts(settings.experts_file) if c.name in EXPERTS]
        sampler = asyncio.create_task(sample_resident(run))
        began = time.monotonic()
        try:
            batch = await BatchStore(redis).create(str(graph), items, pool=EXPERTS, max_tokens=max_tokens)
            driver = BatchDriver(redis, batch, graph_factory(load_graph(graph), EXPERTS), queued=EXPERTS)
            status = await drive(driver, Worker(redis, settings, configs))
        finally:
            run.wall_s = time.monotonic() - began
            sampler.cancel()
            await redis.aclose()
    experts = status["experts"]
    run.per_expert = {n: experts[n]["model_loads"] for n in EXPERTS}
    run.loads = sum(run.per_expert.values())
    run.load_s = sum(experts[n]["load_s"] for n in EXPERTS)
    run.calls = status["calls"]["done"]
    print(
        f"  scheduler: {status['items']['done']}/{len(items)} questions, flushes {driver.dispatcher.flushes}"
    )
    return run


def report(a: Run, b: Run, load_s: float) -> None:
    rows = [("naive (load per item)", a), ("scheduler (grouped by expert)", b)]
    print(
        f"\n{'':32}{'loads':>7}{'max resident':>14}{'calls':>7}{'load s':>9}{'wall s':>9}{'machine load':>14}"
    )
    for label, run in rows:
        busy = sum(run.load_avg) / max(1, len(run.load_avg))
        print(
            f"{label:32}{run.loads:>7}{run.max_resident:>14}{run.calls:>7}{run.load_s:>9.1f}{run.wall_s:>9.1f}"
            f"{busy:>14.1f}"
        )
    print(f"loads per expert: naive {a.per_expert}; scheduler {b.per_expert}")
    ratio = a.wall_s / b.wall_s
    print(f"measured: scheduler {ratio:.2f}x faster than naive ({a.wall_s:.1f}s vs {b.wall_s:.1f}s)")
    per_load = a.load_s / max(1, a.loads)
    per_call = a.call_s / max(1, a.calls)
    pa, pb = a.projected(load_s), b.projected(load_s)
    print(
        f"PROJECTION (not measured) for 7B models loading in {load_s:.0f}s (measured here: "
        f"{per_load:.2f}s per load, {per_call:.2f}s per call): naive {pa:.0f}s, scheduler {pb:.0f}s, "
        f"ratio {pa / pb:.1f}x [each: wall - measured load time + loads x load-s]"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument(
        "--load-s", type=float, default=30.0, help="load time of a 7B model, for the projection"
    )
    parser.add_argument("--data-path", type=Path, default=REPO / "tests/data/mmlu_pro/test_slice.jsonl")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ROUTERS.register(PairRouter.name, f"{__name__}:PairRouter")
    questions = sorted(load_mmlu_pro(args.data_path), key=lambda q: q.question_id)[: args.items]
    with tempfile.TemporaryDirectory(prefix="coe-bench-") as tmp:
        graph = Path(tmp) / "pairs.yaml"
        graph.write_text(GRAPH)
        settings = Settings.load(
            state_dir=Path(tmp) / "state",
            models_dir=Settings.load().model_cache,  # the GGUFs coe prepared once, not a fresh copy
            batch_memory_budget_bytes=1,  # smaller than any model: one model at a time
        )
        print(
            f"{len(questions)} questions x 2 of {EXPERTS}, max_tokens {args.max_tokens}, one model at a time"
        )
        b = await scheduled(settings, graph, questions, args.max_tokens)
        a = await naive(settings, graph, questions, args.max_tokens)
    report(a, b, args.load_s)
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
