"""The models one worker holds: an expert's server is loaded on demand, and others are unloaded
(least recently used first) until the new one fits the worker's memory budget.

A model's size is ``memory_bytes`` from its expert config, else its GGUF file's size, else
``params_b`` × 2 bytes (16-bit weights). A model larger than the whole budget still loads, alone.
Experts coe does not launch (a remote endpoint, a litellm provider) take no memory here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from coe.config import ExpertConfig, Settings
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

    def launched(self, name: str) -> bool:
        config = self.pool.configs.get(name)
        return config is not None and config.launched

    def alive(self, name: str) -> bool:
        """False when the expert's server was loaded here and has since died."""
        if not self.launched(name) or name not in self.resident:
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
        await self.pool.stop_one(name)
        self.resident.pop(name, None)
        self.events.append((time.time(), "unload", name))
        return (launcher.stats.resident_s if launcher else 0.0) - before

    def touch(self, name: str) -> None:
        if name in self.resident:
            self.resident[name] = self.resident.pop(name)
