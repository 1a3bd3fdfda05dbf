"""``select``: an LLM judge keeps ``k`` of the latest answers.

The judge replies with JSON ``{"selected": [i, ...]}``. If it cannot be parsed, ``k`` answers are
picked by a seeded random choice and the trace says so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from coe.errors import ExpertError
from coe.graph.nodes.base import Loc, NodeKind, NodeParams, refs
from coe.graph.nodes.judging import first_json_object, judge_messages
from coe.graph.state import GraphState
from coe.pipeline import RunParams, Trace, call_expert
from coe.types import Candidate


class SelectParams(NodeParams):
    judge: str = Field(description="the expert that judges")
    k: int = Field(1, gt=0, description="how many answers to keep")
    seed: int = Field(0, description="seed of the fallback choice")
    max_tokens: int = Field(64, gt=0)


def selection_schema(n: int, k: int) -> dict[str, Any]:
    """``{"selected": [i, ...]}`` with 1..k distinct indices below n (servers enforce it when they can)."""
    index = {"type": "integer", "minimum": 0, "maximum": n - 1}
    selected = {"type": "array", "items": index, "minItems": 1, "maxItems": k, "uniqueItems": True}
    return {"type": "object", "properties": {"selected": selected}, "required": ["selected"]}


def parse_selection(text: str, n: int, k: int) -> list[int] | None:
    verdict = first_json_object(text)
    if verdict is None or not isinstance(verdict.get("selected"), list):
        return None
    picked: list[int] = []
    for item in verdict["selected"]:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < n and item not in picked:
            picked.append(item)
    return picked[:k] or None


class SelectNode(NodeKind):
    Params = SelectParams

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "judge")

    def _fallback(self, n: int, round_: int) -> list[int]:
        assert isinstance(self.params, SelectParams)
        rng = random.Random(f"{self.params.seed}:{self.name}:{round_}")
        return sorted(rng.sample(range(n), min(self.params.k, n)))

    async def __call__(self, state: GraphState) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, SelectParams)
        candidates: Sequence[Candidate] = state.get("latest") or []
        trace = Trace(self.context.graph)
        event: dict[str, Any] = {"node": self.name, "judge": params.judge, "round": state.get("round", 0)}
        if len(candidates) <= params.k:
            picked, event["reason"] = list(range(len(candidates))), "no more answers than k"
        else:
            messages = judge_messages(state["messages"], list(candidates), params.k)
            try:
                verdict = await call_expert(
                    self.context.lookup.client(params.judge),
                    messages,
                    RunParams(
                        max_tokens=params.max_tokens,
                        temperature=0.0,
                        json_schema=selection_schema(len(candidates), params.k),
                    ),
                    trace,
                    self.name,
                    "judge",
                )
                parsed = parse_selection(verdict.content, len(candidates), params.k)
                failure = None if parsed else "judge output was not a valid selection"
            except ExpertError as err:
                parsed, failure = None, f"judge failed: {err}"
            if parsed is None:
                picked = self._fallback(len(candidates), state.get("round", 0))
                event.update(fallback=True, reason=f"{failure}; seeded random choice")
            else:
                picked, event["fallback"] = parsed, False
        selected = [candidates[i] for i in picked]
        event["selected"] = [c.expert for c in selected]
        event["indices"] = picked
        return {"selected": selected, "selections": [event], "calls": trace.calls}
