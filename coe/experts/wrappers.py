"""Behaviour that wraps one expert client's stream: timeout, retry, bounded concurrency, metering.

Each wrapper is an async generator over the inner stream and closes it when it stops early.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from coe.errors import (
    ExpertError,
    ExpertRejected,
    ExpertTimeout,
    ExpertUnavailable,
    Overloaded,
    UpstreamError,
)
from coe.experts.base import ExpertClient, WrapperExpert
from coe.types import Chunk, ExpertRequest, Usage


class TimeoutExpert(WrapperExpert):
    """Fails a call with ``ExpertTimeout`` when the expert has not finished within ``seconds``.

    Only time spent waiting on the expert counts, not time the consumer spends between chunks.
    """

    def __init__(self, inner: ExpertClient, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        deadline = asyncio.get_running_loop().time() + self.seconds
        async with aclosing(self.inner.stream(request)) as chunks:
            iterator = aiter(chunks)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ExpertTimeout(self.name, f"no answer within {self.seconds:g}s") from None
                yield chunk


class RetryExpert(WrapperExpert):
    """Retries upstream failures that happen before the first chunk, with jittered exponential
    backoff. Never retries a refusal (``ExpertRejected``: a 4xx, a context overflow) or user error,
    and never once text has streamed (the consumer has seen it)."""

    def __init__(self, inner: ExpertClient, retries: int, backoff_s: float = 0.5) -> None:
        super().__init__(inner)
        self.retries = retries
        self.backoff_s = backoff_s

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        attempt = 0
        while True:
            started = False
            try:
                async with aclosing(self.inner.stream(request)) as chunks:
                    async for chunk in chunks:
                        started = True
                        yield chunk
                return
            except ExpertRejected:
                raise
            except UpstreamError as err:
                if started or attempt >= self.retries:
                    if isinstance(err, ExpertError):
                        raise
                    raise ExpertError(self.name, str(err)) from err
            await asyncio.sleep(self.backoff_s * 2**attempt * random.uniform(0.5, 1.5))
            attempt += 1


class LimitExpert(WrapperExpert):
    """At most ``limit`` calls in flight to this expert; others wait their turn, at most
    ``max_waiting`` of them: beyond that a call fails at once with ``Overloaded`` (HTTP 429), with
    an estimate of when to retry from how long calls have been holding their slots."""

    def __init__(self, inner: ExpertClient, limit: int, max_waiting: int | None = None) -> None:
        super().__init__(inner)
        self.limit = limit
        self.max_waiting = max_waiting
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)
        self._hold_s = 1.0  # moving average of how long a call holds its slot

    def retry_after_s(self) -> float:
        return max(1.0, self._hold_s * (self.waiting + 1) / self.limit)

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        if self.max_waiting is not None and self._semaphore.locked() and self.waiting >= self.max_waiting:
            raise Overloaded(self.name, self.waiting, self.retry_after_s())
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        started = time.monotonic()
        try:
            async with aclosing(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._semaphore.release()
            self._hold_s = 0.8 * self._hold_s + 0.2 * (time.monotonic() - started)


class GateExpert(WrapperExpert):
    """Fails at once with ``ExpertUnavailable`` (HTTP 503) while ``is_up()`` says the expert's
    server is down, instead of letting each call find out by timing out."""

    def __init__(self, inner: ExpertClient, is_up: Callable[[], bool]) -> None:
        super().__init__(inner)
        self.is_up = is_up

    def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        if not self.is_up():
            raise ExpertUnavailable(self.name, "its server is down; coe is relaunching it")
        return self.inner.stream(request)


@dataclass(slots=True)
class Meter:
    """Calls, failures and usage of one expert since start."""

    calls: int = 0
    failures: int = 0
    usage: Usage = field(default_factory=Usage)

    def as_dict(self) -> dict[str, object]:
        return {"calls": self.calls, "failures": self.failures, **self.usage.as_dict()}


class MeteredExpert(WrapperExpert):
    """Counts calls, failures, tokens, cost and latency into ``meter``."""

    def __init__(self, inner: ExpertClient, meter: Meter | None = None) -> None:
        super().__init__(inner)
        self.meter = meter or Meter()

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        self.meter.calls += 1
        try:
            async with aclosing(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        self.meter.usage = self.meter.usage + chunk.usage
                    yield chunk
        except Exception:
            self.meter.failures += 1
            raise


def wrap(
    client: ExpertClient,
    *,
    timeout_s: float,
    retries: int,
    max_concurrency: int,
    max_waiting: int | None = None,
    is_up: Callable[[], bool] | None = None,
) -> MeteredExpert:
    """The standard stack: metered(gate(limit(retry(timeout(client))))), the gate only where
    ``is_up`` is given (servers coe launched and watches)."""
    limited: ExpertClient = LimitExpert(
        RetryExpert(TimeoutExpert(client, timeout_s), retries), max_concurrency, max_waiting
    )
    return MeteredExpert(GateExpert(limited, is_up) if is_up is not None else limited)
