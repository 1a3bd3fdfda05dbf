"""``aggregate``: combine answers with an aggregator from ``coe.aggregators`` by name.

``params`` are the aggregator's own (checked against its schema, so a misspelt one is reported at
its line), and the experts it names count as the graph's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from coe.aggregators import AGGREGATORS, AggregatorContext
from coe.aggregators.base import Aggregator, AggregatorParams
from coe.errors import UserError
from coe.experts.base import Emit
from coe.graph.nodes.base import BuildContext, Loc, NodeKind, NodeParams, Problem
from coe.graph.state import GraphState


class AggregateParams(NodeParams):
    aggregator: str = Field(description="an aggregator name (e.g. vote)")
    params: dict[str, Any] = Field(default_factory=dict, description="the aggregator's own parameters")
    over: Literal["auto", "latest", "selected", "history"] = Field(
        "auto", description="which answers: auto = the selected ones if any, else the latest round"
    )


def _aggregator_params(params: AggregateParams) -> tuple[type[Aggregator], AggregatorParams] | None:
    if params.aggregator not in AGGREGATORS:
        return None
    cls = AGGREGATORS.get(params.aggregator)
    try:
        return cls, cls.Params.model_validate(params.params)
    except pydantic.ValidationError:
        return None


class AggregateNode(NodeKind):
    Params = AggregateParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, AggregateParams)
        cls = AGGREGATORS.get(params.aggregator)
        own = AggregatorContext(context.lookup, context.base_dir, name, context.experts)
        self.aggregator = cls(cls.Params.model_validate(params.params), own)

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        assert isinstance(params, AggregateParams)
        found = _aggregator_params(params)
        if found is None:
            return []
        return [(("params", *loc), name) for loc, name in found[0].expert_refs(found[1])]

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, AggregateParams)
        if params.aggregator not in AGGREGATORS:
            known = ", ".join(AGGREGATORS.names)
            return [(("aggregator",), f"unknown aggregator {params.aggregator!r} (known: {known})")]
        aggregator = AGGREGATORS.get(params.aggregator)
        try:
            own = aggregator.Params.model_validate(params.params)
        except pydantic.ValidationError as err:
            return [
                (("params", *e["loc"]), "unknown field" if e["type"] == "extra_forbidden" else e["msg"])
                for e in err.errors(include_url=False)
            ]
        context = AggregatorContext(None, base_dir, experts=experts)
        return [(("params", *loc), msg) for loc, msg in aggregator.check(own, context)]

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        assert isinstance(self.params, AggregateParams)
        over = self.params.over
        if over == "auto":
            candidates = state.get("selected") or state.get("latest") or []
        else:
            candidates = state.get(over) or []
        if not candidates:
            raise UserError(f"node {self.name!r}: no answers to aggregate")
        result = await self.aggregator.aggregate(state["messages"], candidates, state["params"], emit)
        detail = dict(result.detail)
        calls = detail.pop("calls", [])
        event = {
            "node": self.name,
            "aggregator": self.params.aggregator,
            "chosen": list(result.chosen),
            **detail,
        }
        return {"aggregate": result, "aggregates": [event], "calls": calls}
