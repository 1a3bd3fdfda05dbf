"""Per-query latency of the embedding routers on this CPU: embed the question with its options
(no cache) and route, one query at a time, as a live request would.

    .venv/bin/python benchmarks/router_latency.py [--n 210] [--threads 1] [--graph mmlu_pro/coe]
    .venv/bin/python benchmarks/router_latency.py --max-tokens 128   # the embedder alone

Prints p50/p90/p99/max in milliseconds and the load average while it ran (the machine is shared:
other jobs inflate the tail). Questions: the committed slice (210 MMLU-Pro dev questions).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from coe.eval.prompts import build_messages
from coe.routing.data import load_questions
from coe.types import Messages
from routers import ROUTERS, RouterContext, build_router
from routers.embedding import Embedder, query_text

REPO = Path(__file__).resolve().parents[1]


class EmbedOnly:
    """The embedding step alone, at another input limit than the shipped artifacts use."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        self.embedder = Embedder(max_tokens=max_tokens, threads=threads)

    async def route(self, messages: Messages) -> Any:
        return await asyncio.to_thread(self.embedder.compute, [query_text(messages)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graph", default="mmlu_pro/coe")
    parser.add_argument("--n", type=int, default=210)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, help="time the embedder alone at this input limit")
    parser.add_argument("--data-path", default=str(REPO / "tests/data/mmlu_pro/test_slice.jsonl"))
    args = parser.parse_args()
    graph_file = REPO / "graphs" / f"{args.graph}.yaml"
    spec = yaml.safe_load(graph_file.read_text())
    node = next(n for n in spec["nodes"].values() if n["kind"] == "route")
    params = {**node.get("params", {}), "cache": False, "threads": args.threads}
    router: Any = build_router(
        ROUTERS.get(node["router"]), params, RouterContext(spec["experts"], graph_file.parent)
    )
    label = f"{args.graph} ({node['router']})"
    if args.max_tokens:
        router, label = EmbedOnly(args.max_tokens, args.threads), f"embedder alone, {args.max_tokens} tokens"
    questions = sorted(load_questions(args.data_path).values(), key=lambda q: q.question_id)[: args.n]
    prompts = [build_messages(q, (), "cot5") for q in questions]

    async def run() -> list[float]:
        await router.route(prompts[0])  # load the model
        times = []
        for messages in prompts:
            started = time.perf_counter()
            await router.route(messages)
            times.append(1000 * (time.perf_counter() - started))
        return times

    load_before = os.getloadavg()[0]
    times = asyncio.run(run())
    load_after = os.getloadavg()[0]
    p = np.percentile(times, [50, 90, 99])
    print(
        f"{label}, {len(times)} queries, {args.threads} thread(s): p50 {p[0]:.1f} ms, p90 {p[1]:.1f} ms, "
        f"p99 {p[2]:.1f} ms, max {max(times):.1f} ms, mean {statistics.mean(times):.1f} ms; "
        f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
