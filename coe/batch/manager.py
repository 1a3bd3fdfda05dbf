"""The models one worker holds: an expert's server is loaded on demand, and others are unloaded
(least recently used first) until the new one fits the worker's memory budget.

A model's size is ``memory_bytes`` from its expert config, else its GGUF file's size, else
``params_b`` × 2 bytes (16-bit weights). A model larger than the whole budget still loads, alone.
Experts coe does not launch (a remote endpoint, a litellm provider) take no memory here, unless
they are vLLM servers in ``sleep_mode``.

Sleep mode (vLLM's ``--enable-sleep-mode``): unloading a model is ``POST /sleep?level=1`` (weights
to CPU memory, KV cache dropped), loading it again ``POST /wake_up``: seconds instead of a cold
start. The server process stays up; its first load is a cold start when coe launches it, none
when it runs at an endpoint of its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from coe.config import ExpertConfig, Settings
from coe.errors import LaunchError
from coe.experts.models import is_gguf, resolve_model
from coe.experts.pool import ExpertPool


def model_bytes(config: ExpertConfig, settings: Settings) -> int:
    """Bytes an expert's server holds while resident (see the module docstring)."""
    if config.memory_bytes is not None:
        return config.memory_bytes
    if config.backend == "llamacpp" and is_gguf(config.model):
        return Path(resolve_model(config.model, settings.model_cache)).stat().st_size
    return int(config.params_b * 2e9)


class ModelManager:
    def __init__(self, pool: ExpertPool, sizes: dict[str, int], budget: int | None, owner: str) -> None:
        self.pool = pool
        self.sizes = sizes
        self.budget = budget
        self.owner = owner
        self.resident: dict[str, float] = {}  # expert -> last use (monotonic), least recent first
        self.max_resident = 0
        self.loads: dict[str, int] = {}
        self.events: list[tuple[float, str, str]] = []  # (time.time(), "load" | "unload", expert)
        self.asleep: set[str] = set()  # sleep-mode experts whose server sleeps

    def launched(self, name: str) -> bool:
        """True for experts whose model this manager loads and unloads (budget, lease)."""
        config = self.pool.configs.get(name)
        return config is not None and (config.launched or config.sleep_mode)

    def _sleeper(self, name: str) -> str | None:
        """The root URL of a sleep-mode expert's server (None: not sleep mode, or not running)."""
        config = self.pool.configs[name]
        if not config.sleep_mode:
            return None
        if config.endpoint is not None:
            return config.endpoint.rstrip("/").removesuffix("/v1")
        launcher = self.pool.launchers.get(name)
        return launcher.base_url.removesuffix("/v1") if launcher is not None and launcher.running else None

    async def _post(self, name: str, path: str) -> None:
        root = self._sleeper(name)
        assert root is not None
        try:
            async with httpx.AsyncClient(timeout=120.0) as client:
                (await client.post(root + path)).raise_for_status()
        except httpx.HTTPError as err:
            raise LaunchError(f"expert {name!r}: POST {path} failed: {err}") from err

    async def sleep(self, name: str) -> None:
        """Put a sleep-mode expert's server to sleep (its model leaves the accelerator)."""
        await self._post(name, "/sleep?level=1")
        self.asleep.add(name)

    async def wake(self, name: str) -> None:
        await self._post(name, "/wake_up")
        self.asleep.discard(name)

    def alive(self, name: str) -> bool:
        """False when the expert's server was loaded here and has since died."""
        if not self.launched(name) or name not in self.resident:
            return True
        if self.pool.configs[name].endpoint is not None:
            return True
        launcher = self.pool.launchers.get(name)
        return launcher is not None and launcher.running

    def load_id(self, name: str) -> str:
        """Names the current load of an expert's model (empty for experts that are not loaded)."""
        if not self.launched(name):
            return ""
        return f"{self.owner}/{name}#{self.loads.get(name, 0)}"

    def _victims(self, name: str) -> list[str]:
        if self.budget is None:
            return []
        others = [n for n in self.resident if n != name]
        victims = []
        while others and sum(self.sizes[n] for n in others) + self.sizes[name] > self.budget:
            victims.append(others.pop(0))
        return victims

    async def ensure(self, name: str, evict: Callable[[str], Awaitable[None]]) -> float | None:
        """Make ``name`` resident, calling ``evict`` for each model that must go first.
        Returns the load time, or None if nothing was loaded."""
        if not self.launched(name):
            return None
        if name in self.resident:
            if self.alive(name):
                self.resident[name] = self.resident.pop(name)  # most recently used
                return None
            await evict(name)
        for victim in self._victims(name):
            await evict(victim)
        began = time.monotonic()
        if self._sleeper(name) is not None:
            await self.wake(name)
        else:
            await self.pool.start_one(name)
        self.resident[name] = time.monotonic()
        self.loads[name] = self.loads.get(name, 0) + 1
        self.max_resident = max(self.max_resident, len(self.resident))
        self.events.append((time.time(), "load", name))
        return time.monotonic() - began

    async def unload(self, name: str) -> float:
        """Stop an expert's server; returns how long it was resident."""
        launcher = self.pool.launchers.get(name)
        before = launcher.stats.resident_s if launcher else 0.0
        since = self.resident.get(name, time.monotonic())
        if self._sleeper(name) is not None:
            await self.sleep(name)
            self.resident.pop(name, None)
            self.events.append((time.time(), "unload", name))
            return time.monotonic() - since
        await self.pool.stop_one(name)
        self.resident.pop(name, None)
        self.events.append((time.time(), "unload", name))
        return (launcher.stats.resident_s if launcher else 0.0) - before

    def touch(self, name: str) -> None:
        if name in self.resident:
            self.resident[name] = self.resident.pop(name)
