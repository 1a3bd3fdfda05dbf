"""``random``: ``take`` distinct experts of the pool drawn uniformly at random (a baseline).

The draw is seeded by ``seed`` and the query text, so the same request always gets the same
experts, whatever the order or concurrency of requests.
"""

from __future__ import annotations

import hashlib
import random

from pydantic import Field

from coe.types import Messages, RouteDecision
from routers.base import Router, RouterParams
from routers.embedding import query_text


class RandomParams(RouterParams):
    take: int = Field(1, gt=0, description="how many distinct experts to call")
    seed: int = 0


def query_rng(seed: int, messages: Messages) -> random.Random:
    """A generator seeded by ``seed`` and the query text."""
    digest = hashlib.sha256(f"{seed}\0{query_text(messages)}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


class RandomRouter(Router):
    Params = RandomParams
    name = "random"

    async def route(self, messages: Messages) -> RouteDecision:
        params = self.params
        assert isinstance(params, RandomParams)
        pool = list(self.context.experts)
        chosen = query_rng(params.seed, messages).sample(pool, min(params.take, len(pool)))
        return RouteDecision(tuple(chosen), chosen[0] if chosen else None, router=self.name)
