"""``coe``: Composition of Experts (SambaNova).

A category classifier on the query (a softmax over all-MiniLM-L6-v2 embeddings, trained on dev
questions with their MMLU-Pro categories as labels) picks a category; a category-to-expert map,
chosen from per-category accuracy on dev (optionally only among experts whose mean cost per query
fits ``budget``), names the expert. When the classifier is unsure (top probability below
``threshold``) a generalist answers instead: ``fallback``, by default the most accurate expert
overall within the budget. One call per query.

Artifact kind ``category`` (``coe train``): ``labels``, ``per_category`` accuracy,
``overall`` accuracy and ``cost_per_query`` of each expert; arrays ``W`` and ``b``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from coe.errors import UserError
from coe.types import Messages, RouteDecision
from routers.base import RouterParams
from routers.trained import TrainedParams, TrainedRouter, softmax


class CoEParams(TrainedParams):
    threshold: float = Field(
        0.0, ge=0, le=1, description="below this classifier confidence, ask the fallback"
    )
    budget: float | None = Field(None, gt=0, description="max mean USD per query of a mapped expert")
    fallback: str | None = Field(None, description="the generalist; default: best overall within budget")


def best_expert(scores: dict[str, Any], allowed: list[str]) -> str:
    """The allowed expert with the highest score; ties to the first allowed."""
    return max(allowed, key=lambda e: (float(scores.get(e, 0.0)), -allowed.index(e)))


class CategoryRouter(TrainedRouter):
    """Classifier → category → the category's best expert (the shared core of CoE and Bench-CoE)."""

    kind = "category"

    def setup(self) -> None:
        meta = self.artifact.meta
        self.labels: list[str] = list(meta["labels"])
        self.weights = self.artifact.array("W")
        self.bias = self.artifact.array("b")
        self.allowed = self.affordable()
        per_category: dict[str, dict[str, Any]] = meta["per_category"]
        overall = meta["overall"]
        self.mapping = {
            label: best_expert(per_category.get(label, overall), self.allowed) for label in self.labels
        }

    def affordable(self) -> list[str]:
        return list(self.pool)

    def classify(self, vector: np.ndarray[Any, Any]) -> tuple[str, float]:
        probs = softmax(self.weights @ vector + self.bias)
        top = int(np.argmax(probs))
        return self.labels[top], float(probs[top])

    def decide(self, category: str, confidence: float) -> RouteDecision:
        expert = self.mapping[category]
        return RouteDecision((expert,), expert, category=category, confidence=confidence, router=self.name)

    async def route(self, messages: Messages) -> RouteDecision:
        category, confidence = self.classify(await self.vector(messages))
        return self.decide(category, confidence)


class CoERouter(CategoryRouter):
    Params = CoEParams
    name = "coe"

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, CoEParams)
        return [(("fallback",), params.fallback)] if params.fallback else []

    def affordable(self) -> list[str]:
        params = self.params
        assert isinstance(params, CoEParams)
        if params.budget is None:
            return list(self.pool)
        cost = self.artifact.meta["cost_per_query"]
        allowed = [e for e in self.pool if float(cost[e]) <= params.budget]
        if not allowed:
            raise UserError(f"router coe: no expert costs at most ${params.budget} per query")
        return allowed

    def setup(self) -> None:
        super().setup()
        params = self.params
        assert isinstance(params, CoEParams)
        self.fallback = params.fallback or best_expert(self.artifact.meta["overall"], self.allowed)

    def decide(self, category: str, confidence: float) -> RouteDecision:
        params = self.params
        assert isinstance(params, CoEParams)
        if confidence < params.threshold:
            # unsure: no category, the generalist answers
            return RouteDecision((self.fallback,), self.fallback, confidence=confidence, router=self.name)
        return super().decide(category, confidence)
