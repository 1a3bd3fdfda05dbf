"""``answer``: the final answer: the aggregate if there is one, else the first kept answer."""

from __future__ import annotations

from typing import Any

from coe.errors import UserError
from coe.experts.base import Emit
from coe.graph.nodes.base import NodeKind
from coe.graph.state import GraphState


class AnswerNode(NodeKind):
    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        aggregate = state.get("aggregate")
        if aggregate is not None:
            return {"answer": aggregate.content, "finish_reason": aggregate.finish_reason}
        candidates = state.get("selected") or state.get("latest") or []
        if not candidates:
            raise UserError(f"node {self.name!r}: no answer was produced")
        first = candidates[0]
        return {
            "answer": first.content,
            "finish_reason": first.finish_reason,
            "aggregates": [{"node": self.name, "aggregator": "first", "chosen": [first.expert]}],
        }
