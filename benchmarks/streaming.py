"""Time to first token against total time, streamed through coe, side by side in one run.

    .venv/bin/python benchmarks/streaming.py [--url http://127.0.0.1:8000] [--rounds 5] [--max-tokens 128]

Without ``--url`` it starts ``coe serve`` on the embedded default (three local llama.cpp experts)
and stops it after. Each round asks, interleaved: ``single`` streamed (an expert's generation: its
tokens should arrive as they are made) and ``vote`` streamed (a decision over finished answers:
sent once decided). Prints, per graph, the median time to the first content byte, the median
total, their ratio, the number of content events, and the load average beside each round (the
machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


@contextlib.contextmanager
def served(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from coe.experts.launch import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coe", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def one(base: str, graph: str, max_tokens: int) -> tuple[float, float, int]:
    body = {"model": graph, "messages": PROMPT, "max_tokens": max_tokens, "stream": True}
    started = time.monotonic()
    first, pieces = None, 0
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                pieces += 1
                first = first or time.monotonic() - started
    return first or float("nan"), time.monotonic() - started, pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    graphs = ["single", "vote"]
    runs: dict[str, list[tuple[float, float, int]]] = {g: [] for g in graphs}
    with served(args.url) as base:
        one(base, "single", 8)  # warm up
        for round_ in range(args.rounds):
            for graph in graphs:
                runs[graph].append(one(base, graph, args.max_tokens))
            print(f"round {round_ + 1}: load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"max_tokens={args.max_tokens}, rounds={args.rounds}, load average now {os.getloadavg()[0]:.2f}")
    print("| graph | first token (s) | total (s) | first / total | content events |")
    print("|---|---|---|---|---|")
    for graph in graphs:
        first = statistics.median(r[0] for r in runs[graph])
        total = statistics.median(r[1] for r in runs[graph])
        pieces = statistics.median(r[2] for r in runs[graph])
        print(f"| {graph} | {first:.3f} | {total:.3f} | {first / total:.2f} | {pieces:.0f} |")


if __name__ == "__main__":
    main()
