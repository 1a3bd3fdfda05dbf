"""Online multiplexing: coe's model manager versus a first-come-first-served swapper.

    .venv/bin/python benchmarks/multiplex.py

Workload: 60 chat requests (8 tokens each) spread uniformly at random over the three default
llama.cpp experts, arriving as a Poisson process (1.5 requests/s, seed 0); a memory budget of
one model at a time.

(a) fifo: what llama-swap / Ray Serve-style on-demand swapping does: requests are served in
    arrival order; requests for the loaded model run concurrently (each expert's
    max_concurrency), and a request for another model waits for those in flight, then its
    model is swapped in;
(b) coe: a ``coe.service.Service`` with ``serve_memory_budget_bytes`` of one model: calls wait on
    their expert's Redis Stream and the multiplexer loads the expert with the most waiting work
    (``serve_max_wait_s`` = 10 bounds any call's wait).

Prints model loads, p50/p99 latency and throughput side by side, then a projection to 7B models
from a discrete-time simulation of both policies on the same arrivals (checked first against
the measured runs): 30 s cold loads, and 0.5 s wakes from vLLM's sleep mode; each call is taken
to cost 2 s there (stated, not measured). The last stdout line is one JSON object.
The machine is shared: timings are noisy (the 1-minute load average is printed); loads are exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from coe.config import Settings, load_experts
from coe.experts.pool import ExpertPool
from coe.pipeline import RunParams
from coe.service import Service
from coe.types import ExpertRequest, Message

REPO = Path(__file__).resolve().parents[1]
EXPERTS = ["smollm2", "smollm2-warm", "gemma3-270m"]
N, RATE, SEED, MAX_TOKENS, MAX_WAIT_S, CONCURRENCY = 60, 1.5, 0, 8, 10.0, 2
GRAPH = """\
description: {expert} alone
experts: [{expert}]
entry: experts
exit: answer
nodes: {{experts: {{kind: experts}}, answer: {{kind: answer}}}}
edges: [[experts, answer]]
"""


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    expert: str
    text: str


def workload() -> list[Arrival]:
    rng = random.Random(SEED)
    t, out = 0.0, []
    for i in range(N):
        t += rng.expovariate(RATE)
        out.append(Arrival(t, rng.choice(EXPERTS), f"Name a colour and a number ({i})."))
    return out


@dataclass(slots=True)
class Result:
    latencies: list[float] = field(default_factory=list)
    loads: int = 0
    load_s: float = 0.0
    wall_s: float = 0.0
    load_avg: float = 0.0

    def summary(self) -> dict[str, float]:
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return {
            "loads": self.loads,
            "p50_s": round(statistics.median(self.latencies), 2),
            "p99_s": round(q[98], 2),
            "throughput_rps": round(len(self.latencies) / self.wall_s, 3),
            "wall_s": round(self.wall_s, 1),
            "mean_load_s": round(self.load_s / max(1, self.loads), 2),
        }


async def replay(arrivals: list[Arrival], ask: Callable[[Arrival], Awaitable[None]], result: Result) -> None:
    began = time.monotonic()

    async def one(arrival: Arrival) -> None:
        await asyncio.sleep(max(0.0, began + arrival.at - time.monotonic()))
        await ask(arrival)
        result.latencies.append(time.monotonic() - began - arrival.at)

    await asyncio.gather(*(one(a) for a in arrivals))
    result.wall_s = time.monotonic() - began
    result.load_avg = os.getloadavg()[0]


def settings_for(folder: Path, **extra: object) -> Settings:
    graphs = folder / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    for expert in EXPERTS:
        (graphs / f"{expert}.yaml").write_text(GRAPH.format(expert=expert))
    text = (
        (REPO / "config" / "experts.yaml")
        .read_text()
        .replace("max_concurrency: 2", f"max_concurrency: {CONCURRENCY}")
        .replace("context_size: 4096", "context_size: 1024")  # a smaller KV cache loads faster
    )
    (folder / "experts.yaml").write_text(text)
    models = Path("~/.cache/coe/models").expanduser()
    return Settings(
        experts_file=folder / "experts.yaml",
        graphs_dir=graphs,
        state_dir=folder / "state",
        models_dir=models,
        default_max_tokens=MAX_TOKENS,
        **extra,  # type: ignore[arg-type]
    )


async def run_coe(arrivals: list[Arrival], folder: Path) -> Result:
    settings = settings_for(folder, serve_memory_budget_bytes=1, serve_max_wait_s=MAX_WAIT_S)
    result = Result()
    async with Service(settings) as service:
        params = RunParams(max_tokens=MAX_TOKENS)

        async def ask(arrival: Arrival) -> None:
            await service.run(arrival.expert, [{"role": "user", "content": arrival.text}], params)

        await replay(arrivals, ask, result)
        for launcher in service.pool.launchers.values():
            result.loads += launcher.stats.loads
            result.load_s += launcher.stats.load_s
    return result


class FifoSwapper:
    """Arrival order; requests for the loaded model run together; another model waits for them."""

    def __init__(self, pool: ExpertPool) -> None:
        self.pool = pool
        self.loaded: str | None = None
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.queue: deque[tuple[str, asyncio.Future[None]]] = deque()
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.turn = asyncio.Lock()

    async def ask(self, expert: str, messages: list[Message]) -> None:
        async with self.turn:  # admission in arrival order
            if self.loaded != expert:
                await self.idle.wait()  # everything in flight on the old model finishes
                if self.loaded is not None:
                    await self.pool.stop_one(self.loaded)
                await self.pool.start_one(expert)
                self.loaded = expert
            await self.slots.acquire()
            self.in_flight += 1
            self.idle.clear()
        try:
            await self.pool.server_client(expert).complete(ExpertRequest(messages, MAX_TOKENS))
        finally:
            self.slots.release()
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()


async def run_fifo(arrivals: list[Arrival], folder: Path) -> Result:
    settings = settings_for(folder)
    pool = ExpertPool(load_experts(settings.experts_file), settings)
    result = Result()
    swapper = FifoSwapper(pool)
    try:

        async def ask(arrival: Arrival) -> None:
            await swapper.ask(arrival.expert, [{"role": "user", "content": arrival.text}])

        await replay(arrivals, ask, result)
        for launcher in pool.launchers.values():
            result.loads += launcher.stats.loads
            result.load_s += launcher.stats.load_s
    finally:
        await pool.stop()
    return result


# --- projection: both policies simulated in 10 ms steps ------------------------------------------


def simulate(
    arrivals: list[Arrival], policy: str, load_s: float, call_s: float, dt: float = 0.01
) -> dict[str, float]:
    queues: dict[str, deque[float]] = {e: deque() for e in EXPERTS}
    order: deque[tuple[float, str]] = deque()
    pending = deque(arrivals)
    slots: list[float] = []
    latencies: list[float] = []
    model: str | None = None
    ready_at = loaded_at = 0.0
    loads, t = 0, 0.0

    def load(expert: str) -> None:
        nonlocal model, ready_at, loaded_at, loads
        model, loads = expert, loads + 1
        ready_at = loaded_at = t + load_s

    while len(latencies) < len(arrivals):
        t += dt
        while pending and pending[0].at <= t:
            a = pending.popleft()
            queues[a.expert].append(a.at)
            order.append((a.at, a.expert))
        slots = [end for end in slots if end > t]
        if t < ready_at:
            continue
        if policy == "fifo":
            if order and order[0][1] != model:
                if not slots:
                    load(order[0][1])
                continue
            while order and order[0][1] == model and len(slots) < CONCURRENCY:
                at, _ = order.popleft()
                slots.append(t + call_s)
                latencies.append(t + call_s - at)
            continue
        waiting = [e for e in EXPERTS if e != model and queues[e]]
        overdue = [e for e in waiting if t - queues[e][0] >= MAX_WAIT_S]
        busy = model is not None and (bool(queues[model]) or bool(slots))
        if waiting and (not busy or (overdue and t - loaded_at >= MAX_WAIT_S)):
            if not slots:
                if overdue:
                    load(min(overdue, key=lambda e: queues[e][0]))
                else:
                    load(min(waiting, key=lambda e: (-len(queues[e]), queues[e][0])))
            continue
        while model is not None and queues[model] and len(slots) < CONCURRENCY:
            at = queues[model].popleft()
            slots.append(t + call_s)
            latencies.append(t + call_s - at)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"loads": loads, "p50_s": round(statistics.median(latencies), 1), "p99_s": round(q[98], 1)}


def table(rows: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(rows.values())))
    lines = ["| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row.values()) + " |" for name, row in rows.items()]
    return "\n".join(lines)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    arrivals = workload()
    per_expert = {e: sum(a.expert == e for a in arrivals) for e in EXPERTS}
    print(f"{N} requests over {arrivals[-1].at:.1f}s (Poisson, {RATE}/s, seed {SEED}): {per_expert}")
    with tempfile.TemporaryDirectory(prefix="coe-mux-") as tmp:
        fifo = await run_fifo(arrivals, Path(tmp) / "fifo")
        print(f"fifo done: load average {fifo.load_avg:.1f}", flush=True)
        coe = await run_coe(arrivals, Path(tmp) / "coe")
        print(f"coe done: load average {coe.load_avg:.1f}", flush=True)
    measured = {"fifo (measured)": fifo.summary(), "coe (measured)": coe.summary()}
    print(table(measured))
    # a call's time on this machine, from coe's run: time not spent loading, over the calls per slot
    call_s = round(max(0.1, (coe.wall_s - coe.load_s) * CONCURRENCY / N), 2)
    check = {
        "fifo (simulated, measured loads)": simulate(
            arrivals, "fifo", fifo.load_s / max(1, fifo.loads), call_s
        ),
        "coe (simulated, measured loads)": simulate(arrivals, "coe", coe.load_s / max(1, coe.loads), call_s),
    }
    print(f"\nsimulation check ({call_s} s per call, estimated from coe's run):\n" + table(check))
    projection = {
        f"{policy} 7B, {label}": simulate(arrivals, policy, load_s, 2.0)
        for label, load_s in (("30 s cold loads", 30.0), ("0.5 s sleep wakes", 0.5))
        for policy in ("fifo", "coe")
    }
    print("\nPROJECTION to 7B models (simulated: 2 s per call, not measured):\n" + table(projection))
    print(
        json.dumps(
            {
                "coe_loads": coe.loads,
                "fifo_loads": fifo.loads,
                "coe_p50_s": measured["coe (measured)"]["p50_s"],
                "fifo_p50_s": measured["fifo (measured)"]["p50_s"],
                "coe_p99_s": measured["coe (measured)"]["p99_s"],
                "fifo_p99_s": measured["fifo (measured)"]["p99_s"],
                "coe_throughput_rps": measured["coe (measured)"]["throughput_rps"],
                "fifo_throughput_rps": measured["fifo (measured)"]["throughput_rps"],
                "projection_7b": projection,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
