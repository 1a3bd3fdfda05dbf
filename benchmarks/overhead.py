"""What coe adds to a request, against LiteLLM's proxy, measured side by side in one run.

    .venv/bin/python benchmarks/overhead.py [--rounds 5] [--requests 300] [--litellm PATH]
    make bench-overhead        # installs litellm[proxy] into .venv-litellm first

A minimal OpenAI-compatible upstream that answers at once (``/v1/chat/completions``, streaming or
not, ``/v1/models``, ``/health``) runs in its own process. In front of it: coe serving its
``single`` graph over one ``backend: openai`` expert, and LiteLLM's proxy (from its own venv,
``--litellm``; skipped with a note when absent) routing the same model name there; each one
process. Rounds are interleaved (the order rotates) and each measures, per target: latency at
concurrency 1 (p50, p99; "added" is the target's minus the upstream's own in the same round),
throughput and latency at concurrency 16, and the streamed time to the first content byte. The
load average is printed beside each round: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANSWER = "The answer is 42."
BODY = {"messages": [{"role": "user", "content": "What is six times seven?"}], "max_tokens": 16}


# --- the upstream (run in its own process with --serve-upstream PORT) ------------------------------


def _chunks(model: str) -> bytes:
    base = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": model}
    deltas = [{"role": "assistant", "content": ""}, *({"content": w + " "} for w in ANSWER.split(" "))]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}
    )
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def serve_upstream(port: int) -> None:
    import uvicorn

    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload, kind = 404, b"{}", b"application/json"
        if scope["path"] == "/health":
            status, payload = 200, b'{"status": "ok"}'
        elif scope["path"] == "/v1/models":
            status, payload = 200, b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
        elif scope["path"] == "/v1/chat/completions":
            request = json.loads(body)
            status = 200
            if request.get("stream"):
                payload, kind = _chunks(request["model"]), b"text/event-stream"
            else:
                message = {"role": "assistant", "content": ANSWER}
                payload = json.dumps(
                    {
                        "id": "up",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request["model"],
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
                    }
                ).encode()
        headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the processes under test ------------------------------------------------------------------------


def free_port() -> int:
    from coe.experts.launch import free_port as pick

    return pick()


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


@contextlib.contextmanager
def processes(litellm: Path | None) -> Iterator[dict[str, str]]:
    """Start the upstream, coe and (if installed) LiteLLM's proxy; yield name -> base URL."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            up = free_port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up)]))
            urls = {"upstream": f"http://127.0.0.1:{up}"}
            wait_up(urls["upstream"] + "/health", procs[-1], "upstream")

            (folder / "graphs").mkdir()
            (folder / "graphs" / "single.yaml").write_text((REPO / "graphs" / "single.yaml").read_text())
            (folder / "experts.yaml").write_text(
                "experts:\n  - {name: fast, backend: openai, model: m, endpoint: "
                f'"{urls["upstream"]}/v1", api: chat, params_b: 1, max_concurrency: 64, '
                "timeout_s: 30, retries: 0}\n"
            )
            (folder / "coe.yaml").write_text(
                f"experts_file: {folder / 'experts.yaml'}\ngraphs_dir: {folder / 'graphs'}\n"
                f"state_dir: {folder / 'state'}\n"
            )
            port = free_port()
            log = (folder / "coe.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "coe",
                        "serve",
                        "--config",
                        str(folder / "coe.yaml"),
                        "--port",
                        str(port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
            urls["coe"] = f"http://127.0.0.1:{port}"
            wait_up(urls["coe"] + "/healthz", procs[-1], "coe serve")

            if litellm is not None:
                (folder / "litellm.yaml").write_text(
                    "model_list:\n  - model_name: single\n    litellm_params:\n      model: openai/m\n"
                    f"      api_base: {urls['upstream']}/v1\n      api_key: none\n"
                )
                port = free_port()
                env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
                command = [str(litellm), "--config", str(folder / "litellm.yaml"), "--port", str(port)]
                procs.append(
                    subprocess.Popen(
                        [*command, "--num_workers", "1"],
                        stdout=(folder / "litellm.log").open("wb"),
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
                urls["litellm"] = f"http://127.0.0.1:{port}"
                wait_up(urls["litellm"] + "/health/liveliness", procs[-1], "litellm proxy")
            yield urls
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


# --- the client -----------------------------------------------------------------------------------------


@dataclass
class Figures:
    c1: list[float] = field(default_factory=list)  # seconds per request, concurrency 1
    c16: list[float] = field(default_factory=list)
    rps16: list[float] = field(default_factory=list)  # requests per second, one per round
    ttfb: list[float] = field(default_factory=list)  # streamed: seconds to the first content


async def one(session, url: str, model: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    async with session.post(url, json={**BODY, "model": model}) as response:
        assert response.status == 200, await response.text()
        await response.read()
    return time.perf_counter() - started


async def first_content(session, url: str, model: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    first = None
    async with session.post(url, json={**BODY, "model": model, "stream": True}) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if (
                first is None
                and b'"content": "' in line.replace(b'":"', b'": "')
                and b'"content": ""' not in line
            ):
                first = time.perf_counter() - started
    assert first is not None, "no content arrived"
    return first


async def measure(base: str, model: str, requests: int, figures: Figures) -> None:
    import aiohttp

    url = base + "/v1/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        for _ in range(20):  # warm up connections and caches
            await one(session, url, model)
        figures.c1 += [await one(session, url, model) for _ in range(requests)]
        figures.ttfb += [await first_content(session, url, model) for _ in range(requests // 3)]
        queue = list(range(requests * 2))
        latencies: list[float] = []

        async def worker() -> None:
            while queue:
                queue.pop()
                latencies.append(await one(session, url, model))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        figures.rps16.append(len(latencies) / (time.perf_counter() - started))
        figures.c16 += latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(figures: dict[str, Figures], loads: list[float]) -> None:
    up = figures["upstream"]
    shown = ", ".join(f"{x:.2f}" for x in loads)
    print(f"\n{time.strftime('%Y-%m-%d')}, load average during the rounds: {shown}")
    print(
        "| target | added p50 c=1 (ms) | added p99 c=1 (ms) | req/s c=16 | p50 c=16 (ms) | p99 c=16 (ms) "
        "| streamed first content, added p50 (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        added = "—" if name == "upstream" else None
        print(
            f"| {name} | {added or f'{pct(f.c1, 0.5) - pct(up.c1, 0.5):.2f}'} | "
            f"{added or f'{pct(f.c1, 0.99) - pct(up.c1, 0.99):.2f}'} | {statistics.median(f.rps16):.0f} | "
            f"{pct(f.c16, 0.5):.2f} | {pct(f.c16, 0.99):.2f} | "
            f"{added or f'{pct(f.ttfb, 0.5) - pct(up.ttfb, 0.5):.2f}'} |"
        )
    if "litellm" in figures:
        ratio = statistics.median(figures["coe"].rps16) / statistics.median(figures["litellm"].rps16)
        print(f"\ncoe / LiteLLM proxy throughput at concurrency 16: {ratio:.2f}x")


async def bench(urls: dict[str, str], rounds: int, requests: int) -> None:
    models = {"upstream": "m", "coe": "single", "litellm": "single"}
    figures = {name: Figures() for name in urls}
    loads = []
    order = list(urls)
    for round_ in range(rounds):
        for name in order:
            await measure(urls[name], models[name], requests, figures[name])
        order = order[1:] + order[:1]
        loads.append(os.getloadavg()[0])
        print(f"round {round_ + 1}/{rounds}: load average {loads[-1]:.2f}", file=sys.stderr)
    report(figures, loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="per round and target at concurrency 1")
    parser.add_argument("--litellm", type=Path, default=REPO / ".venv-litellm" / "bin" / "litellm")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    litellm = args.litellm if args.litellm.exists() else None
    if litellm is None:
        print(f"no LiteLLM proxy at {args.litellm} (make bench-overhead installs it); measuring coe alone")
    with processes(litellm) as urls:
        asyncio.run(bench(urls, args.rounds, args.requests))


if __name__ == "__main__":
    main()
