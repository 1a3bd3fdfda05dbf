"""ExpertPool: builds a wrapped client per expert and owns the servers it launched.

Servers it launched are watched: one that dies is relaunched (with backoff, counted in the
expert's ``restarts``), and meanwhile calls to it fail at once with ``ExpertUnavailable``. An
expert stopped on purpose (``stop_one``: a batch worker releasing it, say) is not down."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from coe.config import ExpertConfig, Settings
from coe.errors import LaunchError, UserError
from coe.experts.base import ExpertClient
from coe.experts.launch import Launcher
from coe.experts.litellm_client import LiteLLMExpert, close_litellm_clients, load_litellm
from coe.experts.models import resolve_model
from coe.experts.openai_http import OpenAIHTTPExpert
from coe.experts.wrappers import Meter, MeteredExpert, wrap
from coe.metrics import CountRetries

log = logging.getLogger("coe.experts")

#: backend -> (module, class) of its launcher, imported on first use.
LAUNCHERS: dict[str, tuple[str, str]] = {
    "llamacpp": ("coe.experts.launch", "LlamaCppServer"),
    "vllm": ("coe.experts.vllm", "VLLMServer"),
}


def llama_threads(configs: Iterable[ExpertConfig]) -> int:
    """Threads for a llama.cpp server whose config does not say: the cores shared among the pool's
    llama.cpp servers. More threads than cores stall every server (measured in
    ``benchmarks/llama_threads.py``): llama.cpp's threads wait for each other at every step."""
    servers = sum(1 for c in configs if c.backend == "llamacpp" and c.launched)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // max(1, servers)))


def make_launcher(config: ExpertConfig, settings: Settings, *, threads: int | None = None) -> Launcher:
    """``threads``: llama.cpp's default where the config does not say (see ``llama_threads``)."""
    module, cls_name = LAUNCHERS[config.backend]
    cls = getattr(importlib.import_module(module), cls_name)
    model = resolve_model(config.model, settings.model_cache)
    extra = (*config.server_args, *(("--enable-sleep-mode",) if config.sleep_mode else ()))
    options: dict[str, Any] = {"extra_args": extra} if extra else {}
    if config.start_timeout_s is not None:
        options["start_timeout_s"] = config.start_timeout_s
    if config.backend == "llamacpp":
        options["threads"] = config.threads or threads
    launcher: Launcher = cls(
        config.name,
        model,
        log_dir=settings.state_dir / "logs",
        context_size=config.context_size,
        parallel=config.max_concurrency,
        **options,
    )
    return launcher


class ExpertPool:
    """Every configured expert as a ready client; servers for launched experts start in ``start``."""

    def __init__(self, configs: Iterable[ExpertConfig], settings: Settings, *, bounded: bool = True) -> None:
        """``bounded``: calls beyond an expert's ``max_queue`` fail at once (429: the API's
        back-pressure); bulk callers (eval, batch workers, training) pass False and wait their turn."""
        self.settings = settings
        self.bounded = bounded
        self.configs = {c.name: c for c in configs}
        self.launchers: dict[str, Launcher] = {}
        self._clients: dict[str, MeteredExpert] = {}
        self.meters: dict[str, Meter] = {}
        self.restarts: dict[str, int] = {}
        self.retries: dict[str, int] = {}  # attempts beyond the first (coe.metrics)
        self._wanted: set[str] = set()  # launched experts that should be running
        self._watcher: asyncio.Task[None] | None = None
        self._relaunching: dict[str, asyncio.Task[None]] = {}
        #: clients that answer for an expert in front of its server (``coe.batch.multiplex``: calls
        #: wait on the expert's stream until its model is loaded); ``server_client`` bypasses them
        self.front: dict[str, ExpertClient] = {}
        #: more per-expert entries for ``stats`` (the multiplexer's queue and waits)
        self.extra_stats: Callable[[str], dict[str, Any]] | None = None
        for config in self.configs.values():
            if not config.launched:
                self._clients[config.name] = self._wrap(config, config.endpoint)

    def _wrap(self, config: ExpertConfig, base_url: str | None) -> MeteredExpert:
        client: ExpertClient
        if config.backend == "litellm" or base_url is None:
            client = LiteLLMExpert(config, base_url, self.settings.default_max_tokens)
        else:
            client = OpenAIHTTPExpert(config, base_url, self.settings.default_max_tokens)
        wrapped = wrap(
            CountRetries(client, self.retries),
            timeout_s=config.timeout_s,
            retries=config.retries,
            max_concurrency=config.max_concurrency,
            max_waiting=config.queue_limit if self.bounded else None,
            is_up=(lambda: self.state(config.name) == "ready") if config.launched else None,
        )
        wrapped.meter = self.meters.setdefault(config.name, Meter())
        return wrapped

    def add(self, client: ExpertClient) -> None:
        """Register an extra client (a replay expert, say) under its own name."""
        if client.name in self._clients or client.name in self.configs:
            raise UserError(f"expert {client.name!r} is defined twice")
        self._clients[client.name] = MeteredExpert(client, self.meters.setdefault(client.name, Meter()))

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.configs, *self._clients]))

    def __contains__(self, name: object) -> bool:
        return name in self.configs or name in self._clients

    def client(self, name: str) -> ExpertClient:
        front = self.front.get(name)
        return front if front is not None else self.server_client(name)

    def server_client(self, name: str) -> ExpertClient:
        """The client that calls the expert's server itself (never a ``front`` one)."""
        try:
            return self._clients[name]
        except KeyError:
            if name in self.configs:
                raise UserError(f"expert {name!r} is not started") from None
            raise UserError(f"unknown expert {name!r}") from None

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Launch the servers of the named experts (default: all launched experts), in parallel."""
        chosen = self.configs if names is None else names
        wanted = [n for n in chosen if n in self.configs and self.configs[n].launched]
        # litellm takes seconds to import: pay that while the servers load, not on the first request
        # (only where an expert uses it). Every start settles before an error is raised: the
        # caller's clean-up must not race a server still starting or litellm still importing.
        imports = [asyncio.to_thread(load_litellm)] if self._uses_litellm() else []
        results = await asyncio.gather(*imports, *(self.start_one(n) for n in wanted), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self._watcher is None and self.launchers:
            self._watcher = asyncio.create_task(self._watch(), name="coe-expert-watch")

    def _uses_litellm(self) -> bool:
        return any(c.backend == "litellm" for c in self.configs.values())

    async def start_one(self, name: str) -> None:
        config = self.configs[name]
        launcher = self.launchers.get(name)
        if launcher is None:
            launcher = self.launchers[name] = await asyncio.to_thread(
                make_launcher, config, self.settings, threads=llama_threads(self.configs.values())
            )
        base_url = await launcher.start()
        old, self._clients[name] = self._clients.get(name), self._wrap(config, base_url)
        self._wanted.add(name)
        if old is not None:
            await old.aclose()

    async def _watch(self, interval_s: float = 0.25) -> None:
        """Relaunch any wanted server that is no longer running."""
        while True:
            await asyncio.sleep(interval_s)
            for name in list(self._wanted):
                launcher = self.launchers[name]
                if not launcher.running and name not in self._relaunching:
                    log.warning("expert %s: its server (pid %s) died; relaunching", name, launcher.pid)
                    task = asyncio.create_task(self._relaunch(name), name=f"coe-relaunch-{name}")
                    self._relaunching[name] = task
                    task.add_done_callback(self._relaunched)

    def _relaunched(self, task: asyncio.Task[None]) -> None:
        self._relaunching = {n: t for n, t in self._relaunching.items() if t is not task}

    async def _relaunch(self, name: str) -> None:
        delay = 1.0
        while name in self._wanted:
            try:
                await self.launchers[name].stop()  # reap what is left of it
                await self.start_one(name)
            except LaunchError as err:
                log.error("expert %s: relaunch failed (%s); next try in %.0fs", name, err, delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.info("expert %s: relaunched at %s", name, self.launchers[name].base_url)
            return

    async def stop_one(self, name: str) -> None:
        self._wanted.discard(name)
        launcher = self.launchers.get(name)
        if launcher is not None:
            await launcher.stop()
        if name in self.configs and self.configs[name].launched:
            client = self._clients.pop(name, None)
            if client is not None:
                await client.aclose()

    async def stop(self) -> None:
        self._wanted.clear()
        for task in [self._watcher, *self._relaunching.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = None
        await asyncio.gather(*(launcher.stop() for launcher in self.launchers.values()))
        for client in self._clients.values():
            await client.aclose()
        await close_litellm_clients()

    def state(self, name: str) -> str:
        """``ready`` (launched and serving, or reached at its endpoint), ``down`` (its server died
        and is being relaunched), or ``stopped`` (not started, or stopped on purpose)."""
        launcher = self.launchers.get(name)
        if launcher is not None and name in self._wanted:
            return "ready" if launcher.running and name not in self._relaunching else "down"
        return "ready" if name in self._clients and launcher is None else "stopped"

    @property
    def down(self) -> list[str]:
        return [name for name in self.names if self.state(name) == "down"]

    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.names:
            entry: dict[str, Any] = {
                "state": self.state(name),
                "pid": None,
                "restarts": self.restarts.get(name, 0),
            }
            if name in self.launchers:
                entry["pid"] = self.launchers[name].pid
                entry.update(self.launchers[name].stats.as_dict())
            if name in self.meters:
                entry.update(self.meters[name].as_dict())
            if self.extra_stats is not None:
                entry.update(self.extra_stats(name))
            out[name] = entry
        return out

    async def __aenter__(self) -> ExpertPool:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
