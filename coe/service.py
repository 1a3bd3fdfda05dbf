"""The serving object: owns Redis (if coe starts it), the expert pool and the pipelines.

The HTTP layer and the in-process CLI both talk to a ``Service``; nothing here knows HTTP.

As a server (``start_redis=True``) it also runs the batch side on its Redis: with ``REDIS_URL``
unset, the persistent local batch redis-server (``STATE_DIR/batch``, shared with ``coe batch`` and
``coe worker``), so batches survive a restart. The ``Multiplexer`` (``coe.batch.multiplex``) is
the one model manager of the pool: it loads the experts that fit ``serve_memory_budget_bytes``
and swaps the others in by waiting work; it also serves batch calls. An ``Adopter`` drives the
batches nobody drives (Batch API batches, and those whose driver died), and ``BatchAPI`` keeps the
OpenAI Batch API's objects and files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING

from coe.config import ExpertConfig, Settings, load_experts
from coe.errors import GraphNotFound, InvalidRequest, RequestTimeout
from coe.experts.pool import ExpertPool
from coe.pipeline import Pipeline, RunParams, RunResult, StreamEvent
from coe.types import Messages

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from coe.batch.connect import LocalRedis
    from coe.batch.multiplex import Multiplexer
    from coe.batch.openai_api import BatchAPI

log = logging.getLogger("coe.service")

PipelineFactory = Callable[[ExpertPool, Settings], dict[str, Pipeline]]


def default_pipelines(pool: ExpertPool, settings: Settings) -> dict[str, Pipeline]:
    """Every graph under ``settings.graphs_dir`` whose experts the pool has."""
    from coe.graph.catalog import compile_available, load_all

    graphs = load_all(settings.graphs_dir)
    return dict(compile_available(graphs, pool, pool.names, pool.names, settings.engine))


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
        self.redis: LocalRedis | None = None
        self.redis_url = settings.redis_url
        self._start_redis = start_redis
        self.started_at = time.time()
        self.client: aioredis.Redis | None = None
        self.multiplexer: Multiplexer | None = None
        self.batch_api: BatchAPI | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            if self.redis_url is None and self._start_redis:
                from coe.batch.connect import LocalRedis

                self.redis = LocalRedis(self.settings.state_dir / "batch")
                self.redis_url = await self.redis.start()
                log.info("redis-server at %s (data in %s)", self.redis_url, self.redis.folder)
            if self._start_redis and self.redis_url is not None:
                await self._start_batch_side(self.redis_url)
            else:
                await self.pool.start()
            for name, launcher in self.pool.launchers.items():
                log.info("expert %s ready at %s (%.2fs load)", name, launcher.base_url, launcher.stats.load_s)
        except BaseException:
            await self.stop()
            raise

    async def _start_batch_side(self, url: str) -> None:
        from coe.batch.adopt import Adopter
        from coe.batch.connect import connect
        from coe.batch.multiplex import Multiplexer
        from coe.batch.openai_api import BatchAPI

        self.client = connect(url)
        self.multiplexer = Multiplexer(self.client, self.settings, self.pool)
        first = await self.multiplexer.prepare()
        await self.pool.start(first)
        await self.multiplexer.adopt(first)
        self.batch_api = BatchAPI(self.client, self.settings.batch_window_s)
        adopter = Adopter(self.client, self.settings, self.pool.names, interval_s=1.0)
        self._tasks = [
            asyncio.create_task(adopter.run(), name="coe-adopter"),
            asyncio.create_task(self.batch_api.run(), name="coe-batch-api"),
        ]

    async def stop(self) -> None:
        try:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                if self.multiplexer is not None:
                    await self.multiplexer.close()
            finally:
                await self.pool.stop()
                if self.client is not None:
                    await self.client.aclose()
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

    def checked(self, graph: str, params: RunParams) -> Pipeline:
        """The graph's pipeline, once the request's parameters fit it."""
        pipeline = self.pipeline(graph)
        contexts = {e: self.pool.configs[e].context_size for e in pipeline.experts if e in self.pool.configs}
        if params.max_tokens is not None and contexts:
            expert = min(contexts, key=contexts.__getitem__)
            if params.max_tokens >= contexts[expert]:
                raise InvalidRequest(
                    f"max_tokens: {params.max_tokens} is too large: graph {graph!r} calls expert "
                    f"{expert!r}, whose context holds {contexts[expert]} tokens in all",
                    "max_tokens",
                    "invalid_value",
                )
        return pipeline

    async def run(self, graph: str, messages: Messages, params: RunParams | None = None) -> RunResult:
        """Answer in one piece, within ``request_timeout_s`` (else ``RequestTimeout``)."""
        params = params or RunParams()
        pipeline = self.checked(graph, params)
        timeout_s = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await pipeline.run(messages, params)
        except TimeoutError:
            raise RequestTimeout(f"request_timeout_s: no answer within {timeout_s:g}s") from None

    async def stream(
        self, graph: str, messages: Messages, params: RunParams | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The answer's text as it is produced, then the ``RunResult`` (see ``Pipeline.stream``);
        the whole stream ends within ``request_timeout_s`` (else ``RequestTimeout``)."""
        params = params or RunParams()
        pipeline = self.checked(graph, params)
        timeout_s = self.settings.request_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with aclosing(pipeline.stream(messages, params)) as events:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise RequestTimeout(f"request_timeout_s: no answer within {timeout_s:g}s") from None
                yield event

    def unready(self) -> list[str]:
        """Experts that a served graph needs and that are down."""
        needed = {e for p in self.pipelines.values() for e in p.experts}
        return [e for e in self.pool.down if e in needed]

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
