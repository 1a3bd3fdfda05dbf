"""``ranked``: every expert of the pool, most likely to be right first (the order a cascade walks).

A category classifier on the query embedding gives category probabilities; each expert's
expected accuracy is its smoothed per-category dev accuracy weighted by them; the experts come in
that order (``take`` keeps the first N). The decision carries the top category and its
probability. Cascades and the ``weighted-vote`` aggregator read the same artifact for answer
reliability and confidence (:meth:`RankedRouter.probs` is shared with them and remembers recent
queries, so a graph embeds each query once).

Artifact kind ``answers`` (``coe train``; ``coe.routing.answers``).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from coe.aggregators.reliability import Reliability
from coe.types import Messages, RouteDecision
from routers.base import RouterContext
from routers.embedding import query_text
from routers.trained import TrainedParams, TrainedRouter, softmax

__all__ = ["RankedParams", "RankedRouter", "ranked_router"]


class RankedParams(TrainedParams):
    take: int | None = Field(None, gt=0, description="keep the first N experts of the ranking")


class RankedRouter(TrainedRouter):
    Params = RankedParams
    name = "ranked"
    kind = "answers"

    def setup(self) -> None:
        rows = [self.artifact.experts.index(e) for e in self.pool]
        self.labels: list[str] = list(self.artifact.meta["labels"])
        self.weights = self.artifact.array("W")
        self.bias = self.artifact.array("b")
        self.accuracy = self.artifact.array("A")[rows]
        self.reliability = Reliability.from_meta(
            {**self.artifact.meta, "experts": self.pool}, self.artifact.array("T")[rows]
        )
        self.options = int(self.artifact.meta.get("options", 10))
        self._memo: OrderedDict[str, NDArray[np.float32]] = OrderedDict()

    async def probs(self, messages: Messages) -> NDArray[np.float32]:
        """Category probabilities of this query (the last 64 queries are remembered)."""
        text = query_text(messages)
        if text in self._memo:
            self._memo.move_to_end(text)
            return self._memo[text]
        probs = softmax(self.weights @ await self.vector(messages) + self.bias)
        self._memo[text] = probs
        if len(self._memo) > 64:
            self._memo.popitem(last=False)
        return probs

    def rank(self, probs: NDArray[np.floating]) -> list[str]:
        expected = self.accuracy @ probs.astype(np.float32)
        return [self.pool[int(i)] for i in np.argsort(-expected, kind="stable")]

    async def route(self, messages: Messages) -> RouteDecision:
        params = self.params
        assert isinstance(params, RankedParams)
        probs = await self.probs(messages)
        order = self.rank(probs)[: params.take or None]
        top = int(np.argmax(probs))
        return RouteDecision(
            tuple(order), order[0], category=self.labels[top], confidence=float(probs[top]), router=self.name
        )


@functools.cache
def _cached(artifact: Path, experts: tuple[str, ...], cache: bool, threads: int) -> RankedRouter:
    params = RankedParams.model_validate({"artifact": str(artifact), "cache": cache, "threads": threads})
    return RankedRouter(params, RouterContext(experts, artifact.parent))


def ranked_router(
    artifact: Path, experts: tuple[str, ...], cache: bool = True, threads: int = 1
) -> RankedRouter:
    """One router per artifact, pool and embedder setting in a process (nodes share it)."""
    return _cached(artifact.resolve(), experts, cache, threads)
