"""``cost-threshold``: strong vs weak, as RouteLLM does.

A score estimates how much more likely the strong expert is to be right than the weak one for this
query (the chance models of ``bench-coe-query``: ``P(strong) − P(best weak)``); the query goes to
the strong expert when the score reaches the threshold. The threshold is given, or calibrated so
that a target share of dev queries (``strong_share``) would go to the strong expert, on the
router's own scores of the dev (training) questions. ``strong`` defaults to the pool's most accurate expert on
dev; ``weak`` to one expert or a list (then the best utility among them answers, see ``lam``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from coe.errors import UserError
from coe.types import Messages, RouteDecision
from routers.base import RouterParams
from routers.bench_coe_query import CorrectnessRouter
from routers.trained import TrainedParams


class CostThresholdParams(TrainedParams):
    strong: str | None = Field(None, description="default: the pool's most accurate expert on dev")
    weak: list[str] | None = Field(None, description="default: every other expert of the pool")
    threshold: float | None = Field(None, description="route to strong when the score reaches it")
    strong_share: float | None = Field(
        None, ge=0, le=1, description="calibrate for this share of strong calls"
    )
    lam: float = Field(0.0, ge=0, description="among several weak experts: accuracy per USD per 1000 queries")

    @model_validator(mode="after")
    def _one_threshold(self) -> CostThresholdParams:
        if self.threshold is not None and self.strong_share is not None:
            raise ValueError("give threshold or strong_share, not both")
        return self


class CostThresholdRouter(CorrectnessRouter):
    Params = CostThresholdParams
    name = "cost-threshold"

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, CostThresholdParams)
        refs: list[tuple[tuple[str | int, ...], str]] = [
            (("weak", i), n) for i, n in enumerate(params.weak or [])
        ]
        return [(("strong",), params.strong), *refs] if params.strong else refs

    def setup(self) -> None:
        super().setup()
        params = self.params
        assert isinstance(params, CostThresholdParams)
        overall = self.artifact.meta["overall"]
        self.strong = params.strong or max(self.pool, key=lambda e: float(overall[e]))
        self.weak = [w for w in (params.weak or self.pool) if w != self.strong]
        unknown = [e for e in [self.strong, *self.weak] if e not in self.pool]
        if unknown or not self.weak:
            raise UserError(
                f"router cost-threshold: strong/weak experts not in the artifact's pool: {unknown}"
            )
        self.strong_i = self.pool.index(self.strong)
        self.weak_i = np.array([self.pool.index(w) for w in self.weak])
        self.threshold = self.calibrate(0.5 if params.strong_share is None else params.strong_share)
        if params.threshold is not None:
            self.threshold = params.threshold

    def scores(self, chances: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """Scores and the weak pick (index into ``self.weak``) for rows of chances."""
        params = self.params
        assert isinstance(params, CostThresholdParams)
        weak = chances[..., self.weak_i]
        pick = np.argmax(weak - params.lam * self.cost_k[self.weak_i], axis=-1)
        best_weak = np.take_along_axis(weak, np.expand_dims(pick, -1), axis=-1)[..., 0]
        return chances[..., self.strong_i] - best_weak, pick

    def calibrate(self, share: float) -> float:
        """The threshold that sends ``share`` of the dev queries to the strong expert."""
        scores, _ = self.scores(self.calibration())
        if share <= 0:
            return float(np.inf)
        if share >= 1:
            return float(-np.inf)
        return float(np.quantile(scores, 1 - share))

    async def score(self, messages: Messages) -> tuple[float, str]:
        """This query's score and its weak pick (the cost–accuracy curve sweeps the threshold)."""
        score, pick = self.scores(self.chances(await self.vector(messages)))
        return float(score), self.weak[int(pick)]

    async def route(self, messages: Messages) -> RouteDecision:
        score, weak = await self.score(messages)
        expert = self.strong if score >= self.threshold else weak
        return RouteDecision((expert,), expert, confidence=score, weights={expert: 1.0}, router=self.name)
