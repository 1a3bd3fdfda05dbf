"""``bench-coe-query``: Bench-CoE at query level.

Learned from per-question correctness on dev: for each expert, a logistic model on the query's
all-MiniLM-L6-v2 embedding estimates its chance to answer this query correctly. The router picks
the expert with the best chance, or with ``lam > 0`` the best utility
``chance − lam · (USD per 1000 queries)`` (each expert's mean cost on dev). One call per query.

Artifact kind ``correctness`` (``coe train``): ``cost_per_query`` and ``overall`` of each expert;
arrays ``W`` (experts × dims), ``b``, and ``calib`` (the model's chances on its training
questions, for calibrating thresholds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from coe.types import Messages, RouteDecision
from routers.trained import TrainedParams, TrainedRouter


class BenchCoEQueryParams(TrainedParams):
    lam: float = Field(0.0, ge=0, description="accuracy traded per USD per 1000 queries")


def sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


class CorrectnessRouter(TrainedRouter):
    """Per-expert chance of a correct answer for this query (shared by ``cost-threshold``)."""

    kind = "correctness"

    def setup(self) -> None:
        rows = [self.artifact.experts.index(e) for e in self.pool]
        self.weights = self.artifact.array("W")[rows]
        self.bias = self.artifact.array("b")[rows]
        self.cost_k = 1000 * self.column(self.artifact.meta["cost_per_query"])

    def chances(self, vector: NDArray[np.float32]) -> NDArray[np.float32]:
        return sigmoid(self.weights @ vector + self.bias)

    def calibration(self) -> NDArray[np.float32]:
        """The chances of the pool's experts on the training (dev) questions."""
        rows = [self.artifact.experts.index(e) for e in self.pool]
        return self.artifact.array("calib")[:, rows]


class BenchCoEQueryRouter(CorrectnessRouter):
    Params = BenchCoEQueryParams
    name = "bench-coe-query"

    async def route(self, messages: Messages) -> RouteDecision:
        params = self.params
        assert isinstance(params, BenchCoEQueryParams)
        chances = self.chances(await self.vector(messages))
        utility: np.ndarray[Any, Any] = chances - params.lam * self.cost_k
        best = int(np.argmax(utility))
        expert = self.pool[best]
        return RouteDecision(
            (expert,),
            expert,
            confidence=float(chances[best]),
            weights={expert: 1.0},
            router=self.name,
        )
