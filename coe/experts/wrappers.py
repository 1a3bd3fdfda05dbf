"""Behaviour that wraps one expert client: timeout, retry, bounded concurrency, metering."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from coe.errors import ExpertError, ExpertTimeout, UpstreamError
from coe.experts.base import ExpertClient, WrapperExpert
from coe.types import Completion, ExpertRequest, Usage


class TimeoutExpert(WrapperExpert):
    """Fails a call with ``ExpertTimeout`` after ``seconds``."""

    def __init__(self, inner: ExpertClient, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    async def complete(self, request: ExpertRequest) -> Completion:
        try:
            async with asyncio.timeout(self.seconds):
                return await self.inner.complete(request)
        except TimeoutError:
            raise ExpertTimeout(self.name, f"no answer within {self.seconds:g}s") from None


class RetryExpert(WrapperExpert):
    """Retries upstream failures (never user errors) with exponential backoff."""

    def __init__(self, inner: ExpertClient, retries: int, backoff_s: float = 0.5) -> None:
        super().__init__(inner)
        self.retries = retries
        self.backoff_s = backoff_s

    async def complete(self, request: ExpertRequest) -> Completion:
        attempt = 0
        while True:
            try:
                return await self.inner.complete(request)
            except UpstreamError as err:
                if attempt >= self.retries:
                    if isinstance(err, ExpertError):
                        raise
                    raise ExpertError(self.name, str(err)) from err
                await asyncio.sleep(self.backoff_s * 2**attempt)
                attempt += 1


class LimitExpert(WrapperExpert):
    """At most ``limit`` calls in flight to this expert; others wait their turn."""

    def __init__(self, inner: ExpertClient, limit: int) -> None:
        super().__init__(inner)
        self._semaphore = asyncio.Semaphore(limit)

    async def complete(self, request: ExpertRequest) -> Completion:
        async with self._semaphore:
            return await self.inner.complete(request)


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

    async def complete(self, request: ExpertRequest) -> Completion:
        self.meter.calls += 1
        try:
            completion = await self.inner.complete(request)
        except Exception:
            self.meter.failures += 1
            raise
        self.meter.usage = self.meter.usage + completion.usage
        return completion


def wrap(client: ExpertClient, *, timeout_s: float, retries: int, max_concurrency: int) -> MeteredExpert:
    """The standard stack: metered(limit(retry(timeout(client))))."""
    return MeteredExpert(LimitExpert(RetryExpert(TimeoutExpert(client, timeout_s), retries), max_concurrency))
