"""``aggregate``: combine answers with an aggregator from ``coe.aggregators`` by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from coe.aggregators import AGGREGATORS
from coe.errors import UserError
from coe.graph.nodes.base import BuildContext, NodeKind, NodeParams, Problem
from coe.graph.state import GraphState


class AggregateParams(NodeParams):
    aggregator: str = Field(description="an aggregator name (e.g. vote)")
    params: dict[str, Any] = Field(default_factory=dict)
    over: Literal["auto", "latest", "selected", "history"] = Field(
        "auto", description="which answers: auto = the selected ones if any, else the latest round"
    )


class AggregateNode(NodeKind):
    Params = AggregateParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, AggregateParams)
        cls = AGGREGATORS.get(params.aggregator)
        extra = {"lookup": context.lookup, "base_dir": context.base_dir} if cls.uses_experts else {}
        self.aggregator = cls(**params.params, **extra)

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, AggregateParams)
        if params.aggregator not in AGGREGATORS:
            known = ", ".join(AGGREGATORS.names)
            return [(("aggregator",), f"unknown aggregator {params.aggregator!r} (known: {known})")]
        return []

    async def __call__(self, state: GraphState) -> dict[str, Any]:
        assert isinstance(self.params, AggregateParams)
        over = self.params.over
        if over == "auto":
            candidates = state.get("selected") or state.get("latest") or []
        else:
            candidates = state.get(over) or []
        if not candidates:
            raise UserError(f"node {self.name!r}: no answers to aggregate")
        result = await self.aggregator.aggregate(state["messages"], candidates)
        detail = dict(result.detail)
        calls = detail.pop("calls", [])
        event = {
            "node": self.name,
            "aggregator": self.params.aggregator,
            "chosen": list(result.chosen),
            **detail,
        }
        return {"aggregate": result, "aggregates": [event], "calls": calls}
