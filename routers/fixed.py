"""``fixed``: always the same experts: a named list, or the first ``take`` of the graph's pool."""

from __future__ import annotations

from pydantic import Field

from coe.types import Messages, RouteDecision
from routers.base import Router, RouterParams


class FixedParams(RouterParams):
    experts: list[str] | None = Field(None, description="experts to call; default: the graph's pool")
    take: int | None = Field(None, gt=0, description="keep only the first N")


class FixedRouter(Router):
    Params = FixedParams
    name = "fixed"

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, FixedParams)
        return [(("experts", i), name) for i, name in enumerate(params.experts or [])]

    async def route(self, messages: Messages) -> RouteDecision:
        assert isinstance(self.params, FixedParams)
        experts = list(self.params.experts or self.context.experts)
        if self.params.take:
            experts = experts[: self.params.take]
        return RouteDecision(
            tuple(experts), experts[0] if experts else None, confidence=1.0, router=self.name
        )
