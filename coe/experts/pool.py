"""ExpertPool: builds a wrapped client per expert and owns the servers it launched."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from coe.config import ExpertConfig, Settings
from coe.errors import UserError
from coe.experts.base import ExpertClient
from coe.experts.launch import Launcher
from coe.experts.litellm_client import LiteLLMExpert, close_litellm_clients, load_litellm
from coe.experts.models import resolve_model
from coe.experts.wrappers import Meter, MeteredExpert, wrap

#: backend -> (module, class) of its launcher, imported on first use.
LAUNCHERS: dict[str, tuple[str, str]] = {
    "llamacpp": ("coe.experts.launch", "LlamaCppServer"),
    "vllm": ("coe.experts.vllm", "VLLMServer"),
}


def make_launcher(config: ExpertConfig, settings: Settings) -> Launcher:
    module, cls_name = LAUNCHERS[config.backend]
    cls = getattr(importlib.import_module(module), cls_name)
    model = resolve_model(config.model, settings.model_cache)
    options: dict[str, Any] = {"extra_args": config.server_args} if config.server_args else {}
    if config.start_timeout_s is not None:
        options["start_timeout_s"] = config.start_timeout_s
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

    def __init__(self, configs: Iterable[ExpertConfig], settings: Settings) -> None:
        self.settings = settings
        self.configs = {c.name: c for c in configs}
        self.launchers: dict[str, Launcher] = {}
        self._clients: dict[str, MeteredExpert] = {}
        self.meters: dict[str, Meter] = {}
        for config in self.configs.values():
            if not config.launched:
                self._clients[config.name] = self._wrap(config, config.endpoint)

    def _wrap(self, config: ExpertConfig, base_url: str | None) -> MeteredExpert:
        client = LiteLLMExpert(config, base_url, self.settings.default_max_tokens)
        wrapped = wrap(
            client, timeout_s=config.timeout_s, retries=config.retries, max_concurrency=config.max_concurrency
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
        try:
            return self._clients[name]
        except KeyError:
            if name in self.configs:
                raise UserError(f"expert {name!r} is not started") from None
            raise UserError(f"unknown expert {name!r}") from None

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Launch the servers of the named experts (default: all launched experts), in parallel."""
        wanted = [n for n in (names or self.configs) if n in self.configs and self.configs[n].launched]
        # litellm takes seconds to import: pay that while the servers load, not on the first request.
        # Every start settles before an error is raised: the caller's clean-up must not race a
        # server still starting or litellm still importing in its thread.
        results = await asyncio.gather(
            asyncio.to_thread(load_litellm), *(self.start_one(n) for n in wanted), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def start_one(self, name: str) -> None:
        config = self.configs[name]
        launcher = self.launchers.get(name)
        if launcher is None:
            launcher = self.launchers[name] = await asyncio.to_thread(make_launcher, config, self.settings)
        base_url = await launcher.start()
        self._clients[name] = self._wrap(config, base_url)

    async def stop_one(self, name: str) -> None:
        launcher = self.launchers.get(name)
        if launcher is not None:
            await launcher.stop()
        if name in self.configs and self.configs[name].launched:
            client = self._clients.pop(name, None)
            if client is not None:
                await client.aclose()

    async def stop(self) -> None:
        await asyncio.gather(*(launcher.stop() for launcher in self.launchers.values()))
        for client in self._clients.values():
            await client.aclose()
        await close_litellm_clients()

    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.names:
            entry: dict[str, Any] = {}
            if name in self.launchers:
                entry.update(self.launchers[name].stats.as_dict())
            if name in self.meters:
                entry.update(self.meters[name].as_dict())
            out[name] = entry
        return out

    async def __aenter__(self) -> ExpertPool:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
