"""Prometheus metrics of one app (``GET /metrics``), all named ``coe_*``, in a registry of its own.

On the request path only counters and histograms are updated: requests by graph and status, their
latency and time to first token (``ApiMetrics``), and every expert call by expert and role, with
its tokens, cost and latency (``observe_call``, told of each call by ``coe.pipeline``). What the
pool and the batch queues already keep is read when Prometheus scrapes (``PoolCollector``):
restarts, retries, model loads and load seconds, and the batch queues' depths from Redis.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coe.experts.base import ExpertClient, WrapperExpert
from coe.types import Candidate, Chunk, ExpertRequest

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from coe.experts.pool import ExpertPool

#: seconds; from a cached answer to a slow graph's deliberation
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: the label a request gets when its ``model`` names no served graph (keeps the label set bounded)
UNKNOWN_GRAPH = "unknown"


class ApiMetrics:
    """The app's registry and the instruments updated while requests are served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "coe_requests",
            "Chat completion requests by graph and HTTP status (stream_error: a stream that began "
            "and ended with an error event)",
            ["graph", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "coe_request_duration_seconds",
            "Chat completion requests, from arrival to the last byte sent",
            ["graph"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "coe_time_to_first_token_seconds",
            "Streamed chat completions, from arrival to the first content event",
            ["graph"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "coe_rate_limited_requests", "Requests refused by the per-key rate limit (429)", registry=r
        )
        self.calls = Counter(
            "coe_expert_calls", "Expert calls by expert and role", ["expert", "role"], registry=r
        )
        self.failures = Counter(
            "coe_expert_failures",
            "Expert calls that failed after their retries, by expert, role and error",
            ["expert", "role", "error"],
            registry=r,
        )
        self.tokens = Counter(
            "coe_expert_tokens",
            "Tokens of answered expert calls by expert, role and kind (prompt, completion)",
            ["expert", "role", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "coe_expert_cost_usd", "Cost in USD of answered expert calls", ["expert", "role"], registry=r
        )
        self.call_latency = Histogram(
            "coe_expert_call_duration_seconds",
            "Answered expert calls, from request to last token",
            ["expert"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe_call(self, expert: str, role: str | None, result: Candidate | BaseException) -> None:
        """Count one expert call (``coe.pipeline.CALL_LISTENER``)."""
        role = role or "answer"
        self.calls.labels(expert, role).inc()
        if isinstance(result, BaseException):
            self.failures.labels(expert, role, type(result).__name__).inc()
            return
        usage = result.usage
        self.tokens.labels(expert, role, "prompt").inc(usage.prompt_tokens)
        self.tokens.labels(expert, role, "completion").inc(usage.completion_tokens)
        self.cost.labels(expert, role).inc(usage.cost)
        self.call_latency.labels(expert).observe(usage.latency_s)


class PoolCollector(Collector):
    """Reads the pool's own counters at scrape time, and the batch queues' state as last fetched
    by ``refresh`` (the ``/metrics`` handler awaits it just before rendering)."""

    def __init__(self, pool: ExpertPool, redis: aioredis.Redis | None) -> None:
        self.pool = pool
        self.redis = redis
        self._batch: dict[str, tuple[int, dict[str, str]]] = {}

    async def refresh(self) -> None:
        """Fetch each expert's batch stream length and model-load totals in one round trip."""
        if self.redis is None:
            return
        from coe.batch import keys

        names = self.pool.names
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.xlen(keys.stream(name))
            pipe.hgetall(keys.expert_stats(name))
        replies = await pipe.execute()
        self._batch = {
            name: (int(replies[2 * i]), {_text(k): _text(v) for k, v in replies[2 * i + 1].items()})
            for i, name in enumerate(names)
        }

    def collect(self) -> Iterable[Metric]:
        pool = self.pool
        up = GaugeMetricFamily("coe_expert_up", "1 while the expert can be called", labels=["expert"])
        restarts = CounterMetricFamily(
            "coe_expert_restarts", "Servers coe relaunched after they died", labels=["expert"]
        )
        retries = CounterMetricFamily(
            "coe_expert_retries", "Expert call attempts beyond the first", labels=["expert"]
        )
        loads = CounterMetricFamily(
            "coe_model_loads", "Model loads (server launches) by expert and where", labels=["expert", "by"]
        )
        load_s = CounterMetricFamily(
            "coe_model_load_seconds", "Seconds spent loading models", labels=["expert", "by"]
        )
        depth = GaugeMetricFamily(
            "coe_batch_queue_depth", "Batch calls waiting or in flight for the expert", labels=["expert"]
        )
        for name in pool.names:
            up.add_metric([name], 1.0 if pool.state(name) == "ready" else 0.0)
            restarts.add_metric([name], pool.restarts.get(name, 0))
            retries.add_metric([name], pool.retries.get(name, 0))
            launcher = pool.launchers.get(name)
            if launcher is not None:
                loads.add_metric([name, "api"], launcher.stats.loads)
                load_s.add_metric([name, "api"], launcher.stats.load_s)
            if name in self._batch:
                length, stats = self._batch[name]
                depth.add_metric([name], length)
                loads.add_metric([name, "batch"], int(stats.get("loads", 0)))
                load_s.add_metric([name, "batch"], float(stats.get("load_s", 0)))
        yield from (up, restarts, retries, loads, load_s, depth)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CountRetries(WrapperExpert):
    """Counts attempts beyond the first into ``counts[name]``. It sits inside the retry wrapper,
    which sends the same request object again: a request seen before and not yet answered is a
    retry. Requests whose attempt did not finish are remembered (the last ``remember`` of them,
    held, so their ids cannot be reused while remembered)."""

    def __init__(self, inner: ExpertClient, counts: dict[str, int], remember: int = 256) -> None:
        super().__init__(inner)
        self.counts = counts
        self.remember = remember
        self._open: collections.OrderedDict[int, ExpertRequest] = collections.OrderedDict()

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        key = id(request)
        if self._open.get(key) is request:
            self.counts[self.name] = self.counts.get(self.name, 0) + 1
        else:
            self._open[key] = request
            if len(self._open) > self.remember:
                self._open.popitem(last=False)
        async with aclosing(self.inner.stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk
        self._open.pop(key, None)


def render(metrics: ApiMetrics) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(metrics.registry)
