"""Per-query latency of the embedding routers on this CPU, beside their cross-validated accuracy:
embed the question with its options (no cache) and route, one query at a time, as a live
request would.

    .venv/bin/python benchmarks/router_latency.py                     # every trained mmlu_pro router
    .venv/bin/python benchmarks/router_latency.py --graphs coe,frugal --n 500
    .venv/bin/python benchmarks/router_latency.py --artifact-dir DIR  # shipped vs DIR artifacts, interleaved
    .venv/bin/python benchmarks/router_latency.py --max-tokens 128    # MiniLM alone at 128 word pieces

For each graph: the embedder its artifact was trained with (``all-MiniLM-L6-v2`` or the distilled
static table, ``minilm-static-384``), p50/p90/p99/max in milliseconds of embedding + decision,
with ``--artifact-dir`` the shipped artifact and DIR's (e.g. the static-table ones in
``config/routers/static``) timed side by side, in interleaved rounds, with the ratio of their
p50 and p99, and the 5-fold cross-validated accuracy of each ``--cv ROOT:LABEL`` folder holding
``ROOT/<graph>/cv.json`` (``coe train --cv 5 --cv-out ROOT/<graph>``), so latency and accuracy
are read side by side. The load average while it ran is printed (the machine is shared: other
jobs inflate the tail). Questions: the committed slice (210 MMLU-Pro dev questions), cycled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from coe.questions.prompts import build_messages
from coe.routing.data import load_questions
from coe.types import Messages
from routers import ROUTERS, RouterContext, build_router
from routers.embedding import Embedder, query_text

REPO = Path(__file__).resolve().parents[1]
TRAINED = ["coe", "bench-coe-subject", "bench-coe-query", "symbolic-moe", "symbolic-moe-top", "cost-aware"]
TRAINED += ["frugal", "ensemble-3", "mixed-frugal"]


class EmbedOnly:
    """The embedding step alone, at another input limit than the shipped artifacts use."""

    def __init__(self, max_tokens: int, threads: int) -> None:
        self.embedder = Embedder(max_tokens=max_tokens, threads=threads)

    async def route(self, messages: Messages) -> Any:
        return await asyncio.to_thread(self.embedder.compute, [query_text(messages)])


def router_of(graph: str, threads: int, artifact_dir: Path | None) -> tuple[Any, str]:
    graph_file = REPO / "graphs" / "mmlu_pro" / f"{graph}.yaml"
    spec = yaml.safe_load(graph_file.read_text())
    node = next(n for n in spec["nodes"].values() if n["kind"] == "route")
    params = {**node.get("params", {}), "cache": False, "threads": threads}
    if artifact_dir is not None:
        params["artifact"] = str((artifact_dir / Path(params["artifact"]).name).resolve())
    context = RouterContext(spec["experts"], graph_file.parent)
    router = build_router(ROUTERS.get(node["router"]), params, context)
    model = router.artifact.meta.get("embedding", {}).get("model", "?")
    return router, model


def timed(routers: list[Any], prompts: list[Messages], rounds: int) -> list[list[float]]:
    """Per-query milliseconds of each router over ``prompts``, timed in ``rounds`` interleaved
    rounds (each round every router takes its share of the queries, in alternating order), so
    the machine's load falls on all of them alike."""

    async def run() -> list[list[float]]:
        for router in routers:
            await router.route(prompts[0])  # load the model
        times: list[list[float]] = [[] for _ in routers]
        share = max(1, len(prompts) // rounds)
        for r in range(rounds):
            order = list(range(len(routers)))
            if r % 2:
                order.reverse()
            for i in order:
                for messages in prompts[r * share : (r + 1) * share]:
                    started = time.perf_counter()
                    await routers[i].route(messages)
                    times[i].append(1000 * (time.perf_counter() - started))
        return times

    return asyncio.run(run())


def cv_accuracy(root: Path, graph: str) -> str:
    path = root / graph / "cv.json"
    if not path.is_file():
        return "—"
    data = json.loads(path.read_text())
    return f"{100 * data['accuracy']:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graphs", default=",".join(TRAINED), help="graphs/mmlu_pro names")
    parser.add_argument("--n", type=int, default=1000, help="queries per router (the slice, cycled)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (with --artifact-dir)")
    parser.add_argument("--max-tokens", type=int, help="time MiniLM alone at this input limit")
    parser.add_argument("--artifact-dir", type=Path, help="read each router's artifact (same file name) here")
    parser.add_argument("--cv", action="append", default=[], metavar="ROOT:LABEL", help="CV folders to show")
    parser.add_argument("--data-path", default=str(REPO / "tests/data/mmlu_pro/test_slice.jsonl"))
    args = parser.parse_args()
    questions = sorted(load_questions(args.data_path).values(), key=lambda q: q.question_id)
    prompts = [build_messages(questions[i % len(questions)], (), "cot5") for i in range(args.n)]
    cvs = [(Path(c.split(":")[0]), c.split(":", 1)[-1]) for c in args.cv]
    load_before = os.getloadavg()[0]
    rows = []
    ratios: list[tuple[str, float, float]] = []
    if args.max_tokens:
        [times] = timed([EmbedOnly(args.max_tokens, args.threads)], prompts, 1)
        rows.append((f"MiniLM alone, {args.max_tokens} tokens", "all-MiniLM-L6-v2", times, []))
    else:
        for graph in args.graphs.split(","):
            accuracy = [cv_accuracy(root, graph) for root, _ in cvs]
            shipped, model = router_of(graph, args.threads, None)
            if args.artifact_dir is None:
                [times] = timed([shipped], prompts, 1)
                rows.append((graph, model, times, accuracy))
                continue
            other, other_model = router_of(graph, args.threads, args.artifact_dir)
            times, other_times = timed([shipped, other], prompts, args.rounds)
            rows.append((graph, model, times, accuracy))
            rows.append((graph, other_model, other_times, accuracy))
            p_shipped, p_other = np.percentile(times, [50, 99]), np.percentile(other_times, [50, 99])
            ratios.append((graph, p_shipped[0] / p_other[0], p_shipped[1] / p_other[1]))
    load_after = os.getloadavg()[0]
    header = ["router (graph)", "embedding", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"]
    print("| " + " | ".join(header + [f"CV accuracy ({label})" for _, label in cvs]) + " |")
    print("|" + "---|" * (len(header) + len(cvs)))
    for label, model, times, accuracy in rows:
        p = np.percentile(times, [50, 90, 99])
        cells = [label, model, f"{p[0]:.2f}", f"{p[1]:.2f}", f"{p[2]:.2f}", f"{max(times):.2f}"]
        print("| " + " | ".join([*cells, f"{statistics.mean(times):.2f}", *accuracy]) + " |")
    if ratios:
        print(f"\nshipped ÷ {args.artifact_dir}, same run, interleaved:")
        for graph, p50, p99 in ratios:
            print(f"  {graph}: p50 {p50:.1f}x, p99 {p99:.1f}x faster")
    print(
        f"\n{args.n} queries per router, {args.threads} thread(s); load average {load_before:.1f} -> "
        f"{load_after:.1f} on {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


if __name__ == "__main__":
    main()
