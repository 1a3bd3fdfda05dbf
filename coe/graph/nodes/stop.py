"""``stop``: ends a loop. After each round it decides: go back to ``next`` or on to ``done``.

The loop stops when ``max_rounds`` rounds are complete, when ``condition`` holds (``judge-stop``:
the loop's judge said so), or when the ``moderator`` expert says so (JSON ``{"stop": true}``;
unparsable output means go on). The stop node names its loop: it counts the loop's rounds and
hands the answers the round kept (the selected ones, else the latest) to the next round; when the
loop ends both are reset, so the loop starts afresh if the graph comes back to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from coe.errors import ExpertError
from coe.experts.base import Emit
from coe.graph.conditions import CONDITIONS
from coe.graph.nodes.base import Loc, NodeKind, NodeParams, Problem, refs
from coe.graph.nodes.judging import first_json_object, moderator_messages
from coe.graph.state import GraphState
from coe.pipeline import RunParams, Trace, call_expert
from coe.prompts import prompt_problem, resolve_prompt

STOP_SCHEMA = {"type": "object", "properties": {"stop": {"type": "boolean"}}, "required": ["stop"]}


class StopParams(NodeParams):
    max_rounds: int = Field(gt=0, description="the loop's bound")
    next: str = Field(description="the node to loop back to")
    done: str = Field(description="the node after the loop")
    condition: str | None = Field(None, description="stop early when it holds: " + ", ".join(CONDITIONS))
    threshold: float | None = None
    moderator: str | None = Field(None, description="an expert asked whether to stop early")
    moderator_prompt: str = Field("stop.moderator", description="a prompt name (coe.prompts) or its text")


class StopNode(NodeKind):
    Params = StopParams

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "moderator")

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, StopParams)
        if params.condition is not None and params.condition not in CONDITIONS:
            return [
                (("condition",), f"unknown condition {params.condition!r} (known: {', '.join(CONDITIONS)})")
            ]
        problem = prompt_problem(params.moderator_prompt, "stop.moderator")
        return [(("moderator_prompt",), problem)] if problem else []

    async def _moderator_stops(self, state: GraphState, round_: int, trace: Trace) -> tuple[bool, str]:
        params = self.params
        assert isinstance(params, StopParams) and params.moderator is not None
        answers = state.get("selected") or state.get("latest") or []
        prompt = resolve_prompt(params.moderator_prompt, f"{self.name}.moderator_prompt")
        messages = moderator_messages(prompt, state["messages"], list(answers), round_)
        try:
            reply = await call_expert(
                self.context.lookup.client(params.moderator),
                messages,
                RunParams(
                    max_tokens=32,
                    temperature=0.0,
                    json_schema=STOP_SCHEMA,
                    metadata=state["params"].metadata,  # the request's, as for every call it makes
                ),
                trace,
                self.name,
                "judge",
                prompt=prompt.name,
            )
        except ExpertError as err:
            return False, f"moderator failed ({err}); going on"
        verdict = first_json_object(reply.content)
        if verdict is None or not isinstance(verdict.get("stop"), bool):
            return False, "moderator output unparsable; going on"
        return verdict["stop"], f"moderator said stop={verdict['stop']}"

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, StopParams)
        round_ = state.get("rounds", {}).get(self.name, 0) + 1
        trace = Trace(self.context.graph)
        stop, reason = False, "continue"
        if round_ >= params.max_rounds:
            stop, reason = True, f"reached max_rounds={params.max_rounds}"
        elif params.condition and CONDITIONS[params.condition](state, params.threshold):
            stop, reason = True, f"condition {params.condition} holds"
        elif params.moderator:
            stop, reason = await self._moderator_stops(state, round_, trace)
        event = {"node": self.name, "round": round_, "stop": stop, "reason": reason}
        kept = state.get("selected") or state.get("latest") or []
        return {
            "rounds": {self.name: 0 if stop else round_},
            "carry": {self.name: [] if stop else list(kept)},
            "stopped": stop,
            "stops": [event],
            "calls": trace.calls,
        }
