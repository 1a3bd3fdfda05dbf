"""The serving object: owns Redis (if coe starts it), the expert pool and the pipelines.

The HTTP layer and the in-process CLI both talk to a ``Service``; nothing here knows HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType

from coe.config import ExpertConfig, Settings, load_experts
from coe.errors import GraphNotFound
from coe.experts.pool import ExpertPool
from coe.pipeline import Pipeline, RunParams, RunResult
from coe.redis_server import RedisServer
from coe.types import Messages

log = logging.getLogger("coe.service")

PipelineFactory = Callable[[ExpertPool, Settings], dict[str, Pipeline]]


def default_pipelines(pool: ExpertPool, settings: Settings) -> dict[str, Pipeline]:
    """Every graph under ``settings.graphs_dir`` whose experts the pool has."""
    from coe.graph.catalog import compile_available, load_all

    graphs = load_all(settings.graphs_dir)
    return dict(compile_available(graphs, pool, pool.names, pool.names))


class Service:
    """Start with ``async with Service(settings) as service``; then ``await service.run(...)``."""

    def __init__(
        self,
        settings: Settings,
        experts: list[ExpertConfig] | None = None,
        pipelines: PipelineFactory = default_pipelines,
        start_redis: bool = True,
    ) -> None:
        self.settings = settings
        self.experts = experts if experts is not None else load_experts(settings.experts_file)
        self.pool = ExpertPool(self.experts, settings)
        # Graphs are checked and compiled before anything starts: a bad graph stops start-up early.
        self.pipelines: dict[str, Pipeline] = pipelines(self.pool, settings)
        self.redis: RedisServer | None = None
        self.redis_url = settings.redis_url
        self._start_redis = start_redis
        self.started_at = time.time()

    async def start(self) -> None:
        try:
            if self.redis_url is None and self._start_redis:
                self.redis = RedisServer(parent_dir=self.settings.state_dir / "redis")
                self.redis_url = await self.redis.start()
                log.info("started redis-server at %s (data in %s)", self.redis_url, self.redis.data_dir)
            await self.pool.start()
            for name, launcher in self.pool.launchers.items():
                log.info("expert %s ready at %s (%.2fs load)", name, launcher.base_url, launcher.stats.load_s)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        try:
            await self.pool.stop()
        finally:
            if self.redis is not None:
                await self.redis.stop()
                self.redis = None

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise GraphNotFound(f"The model {name!r} does not exist (graphs served: {known})") from None

    async def run(self, graph: str, messages: Messages, params: RunParams | None = None) -> RunResult:
        return await self.pipeline(graph).run(messages, params or RunParams())

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
