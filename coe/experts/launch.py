"""Start and stop the model servers that host experts, counting loads and load time.

A launcher owns one server process for one expert. ``start()`` returns the server's
OpenAI-compatible base URL once its health check passes; ``stop()`` terminates it (SIGTERM, then
SIGKILL) and waits, within a bound. The server runs on a lifeline (``coe.experts.child``): it never
outlives the process that started it, whenever and however that process ends.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from coe.errors import LaunchError
from coe.experts.child import Child


@dataclass(slots=True)
class LoadStats:
    """How often an expert's model was loaded, and for how long it has been resident."""

    loads: int = 0
    load_s: float = 0.0
    resident_s: float = 0.0
    resident_since: float | None = None

    def as_dict(self) -> dict[str, float | int | bool]:
        resident = self.resident_s
        if self.resident_since is not None:
            resident += time.monotonic() - self.resident_since
        return {
            "loads": self.loads,
            "load_s": round(self.load_s, 3),
            "resident_s": round(resident, 3),
            "resident": self.resident_since is not None,
        }


def die_with_parent() -> None:
    """In a child before exec: ask Linux to SIGTERM it when its parent dies. For a direct child that
    handles SIGTERM (the tests' ``coe serve``); servers coe starts use ``Child`` instead."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Launcher(abc.ABC):
    """Runs one model server as a child process."""

    health_path = "/health"

    def __init__(self, name: str, *, log_dir: Path, start_timeout_s: float, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.log_dir = log_dir
        self.start_timeout_s = start_timeout_s
        self.stats = LoadStats()
        self._child: Child | None = None
        self._port: int | None = None

    @abc.abstractmethod
    def command(self, port: int) -> list[str]:
        """The argv that starts the server on ``port``."""

    def environment(self) -> dict[str, str] | None:
        """The server's environment; None inherits coe's."""
        return None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise LaunchError(f"server for {self.name!r} is not running")
        return f"http://{self.host}:{self._port}/v1"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    async def start(self) -> str:
        if self.running:
            return self.base_url
        began = time.monotonic()
        self._port = free_port(self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._child = await Child.start(
                self.command(self._port), stdout=log, stderr=log, env=self.environment()
            )
        try:
            await self._wait_healthy(self._child)
        except BaseException:
            await self.stop()
            raise
        now = time.monotonic()
        self.stats.loads += 1
        self.stats.load_s += now - began
        self.stats.resident_since = now
        return self.base_url

    async def _wait_healthy(self, child: Child) -> None:
        url = f"http://{self.host}:{self._port}{self.health_path}"
        deadline = time.monotonic() + self.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if child.returncode is not None:
                    raise LaunchError(
                        f"server for {self.name!r} exited with {child.returncode}: {self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise LaunchError(
            f"server for {self.name!r} not healthy after {self.start_timeout_s:.0f}s: {self._log_tail()}"
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM, SIGKILL after ``timeout_s``; returns within a bound."""
        child, self._child = self._child, None
        if self.stats.resident_since is not None:
            self.stats.resident_s += time.monotonic() - self.stats.resident_since
            self.stats.resident_since = None
        if child is not None:
            await child.stop(timeout_s)


class LlamaCppServer(Launcher):
    """A llama.cpp server (xllamacpp) for one GGUF file."""

    def __init__(
        self,
        name: str,
        model_path: str,
        *,
        log_dir: Path,
        context_size: int = 4096,
        parallel: int = 2,
        threads: int | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(name, log_dir=log_dir, start_timeout_s=start_timeout_s)
        self.model_path = model_path
        self.context_size = context_size
        self.parallel = parallel
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coe.experts._llama_server",
            "--model",
            self.model_path,
            "--host",
            self.host,
            "--port",
            str(port),
            "--ctx",
            str(self.context_size),
            "--parallel",
            str(self.parallel),
            "--threads",
            str(self.threads),
            "--alias",
            self.name,
        ]
