"""Shared fixtures. Everything here is real: a redis-server, llama.cpp expert servers, ``coe serve``.

Session-scoped fixtures start each expensive thing once:

- ``settings_dir``: a temporary folder with a ``coe.yaml`` over the repo's experts and graphs; its
  state (logs, Redis data) stays in the folder, assembled models come from ``~/.cache/coe/models``;
- ``redis_server``: a ``coe.redis_server.RedisServer`` on a free port, yields its URL;
- ``live_server``: ``python -m coe serve`` as a subprocess, yields its base URL
  (``http://127.0.0.1:PORT``); on teardown it gets SIGTERM and must exit 0 leaving no child behind.

Timings worth watching (server start, first answers) go to ``timings`` and are printed at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from coe.batch.connect import connect
from coe.config import Settings
from coe.experts.launch import die_with_parent, free_port
from coe.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
#: Shared with `make serve`, so the Gemma GGUF is assembled once per machine, not per session.
MODEL_CACHE = Path("~/.cache/coe/models").expanduser()
#: The environment variables Settings reads: kept out so no test depends on the caller's shell.
SETTINGS_ENV = frozenset({"REDIS_URL", *(f"COE_{name.upper()}" for name in Settings.model_fields)})
SERVER_START_TIMEOUT_S = 300.0

TIMINGS = pytest.StashKey[dict[str, float]]()


def clean_env() -> dict[str, str]:
    """This process's environment without the variables Settings reads."""
    return {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}


def coe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m coe ARGS`` from the repo root, without the caller's settings variables."""
    return subprocess.run(
        [sys.executable, "-m", "coe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=REPO,
    )


def subcommands(help_text: str) -> list[str]:
    """The subcommands listed under COMMAND in ``coe --help``."""
    block = help_text.split("COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\w[\w-]*)", block, re.MULTILINE)


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid`` as {pid: command line}, read from /proc (psutil-free)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses): state, ppid, ...
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = cmdline(child)
                frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    """Wait until every pid is gone; returns those still alive after ``timeout_s``."""
    pending = pids
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if alive(p)]
        if pending:
            time.sleep(0.1)
    return pending


def write_settings(folder: Path, **fields: object) -> Path:
    """``folder/coe.yaml`` over the repo's experts and graphs, state in ``folder/state``; ``fields``
    replace or add settings."""
    settings: dict[str, object] = {
        "experts_file": REPO / "config" / "experts.yaml",
        "graphs_dir": REPO / "graphs",
        "state_dir": folder / "state",
        "models_dir": MODEL_CACHE,
        "default_max_tokens": 32,
        **fields,
    }
    path = folder / "coe.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


@pytest.fixture(scope="session")
def timings(request: pytest.FixtureRequest) -> dict[str, float]:
    """Seconds measured by tests; printed in the terminal summary."""
    return request.config.stash.setdefault(TIMINGS, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    measured = config.stash.get(TIMINGS, {})
    if measured:
        terminalreporter.write_sep("-", "coe timings")
        for name, seconds in measured.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")


@pytest.fixture(autouse=True)
def _no_leaky_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: keep the caller's REDIS_URL and COE_<FIELD> out of the tests."""
    for key in SETTINGS_ENV & set(os.environ):
        monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs ``coe.cli.main`` in this process sets up coe's logging (root's handlers
    replaced by a queue to stderr): put pytest's own back afterwards and stop coe's writer thread."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        listener = getattr(handler, "listener", None)
        if handler not in handlers and listener is not None:
            atexit.unregister(listener.stop)
            listener.stop()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def settings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``coe.yaml`` (see ``write_settings``) and the session's state."""
    folder = tmp_path_factory.mktemp("coe")
    write_settings(folder)
    return folder


@pytest.fixture(scope="session")
def config_file(settings_dir: Path) -> Path:
    return settings_dir / "coe.yaml"


@pytest.fixture
def settings(config_file: Path) -> Settings:
    return Settings.load(config_file)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = RedisServer(parent_dir=tmp_path_factory.mktemp("redis"))
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> dict[str, object]:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"coe serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(url + "/healthz", timeout=2.0)
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"coe serve not healthy after {SERVER_START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes], children: dict[int, str], log: Path) -> None:
    """SIGTERM ``proc``; assert it exits 0 and that none of ``children`` outlives it."""
    children = {**children, **descendants(proc.pid)}
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"coe serve ignored SIGTERM for 60s:\n{log.read_text()[-3000:]}")
    left = wait_gone(list(children))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert code == 0, f"coe serve exited with {code}:\n{log.read_text()[-3000:]}"
    assert not left, f"left behind: {[children[p] for p in left]}"


@pytest.fixture(scope="session")
def live_server(config_file: Path, timings: dict[str, float]) -> Iterator[str]:
    """``coe serve`` in a subprocess over the default experts; yields ``http://127.0.0.1:PORT``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = config_file.parent / "serve.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coe", "serve", "--config", str(config_file), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            preexec_fn=die_with_parent,  # a killed pytest takes the server down with it
        )
    try:
        health = _wait_healthy(proc, url, log)
    except BaseException:
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        raise
    timings["live_server start (redis + 3 llama.cpp servers)"] = time.monotonic() - started
    children = descendants(proc.pid)
    commands = list(children.values())
    experts = health["experts"]
    assert isinstance(experts, dict)
    assert sum("redis-server" in c for c in commands) == 1, commands
    assert sum("coe.experts._llama_server" in c for c in commands) == len(experts), commands
    try:
        yield url
    finally:
        stop_server(proc, children, log)


@pytest_asyncio.fixture(loop_scope="module")
async def redis(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's redis-server, on the test module's event loop."""
    client = connect(redis_server)
    try:
        yield client
    finally:
        await client.aclose()
