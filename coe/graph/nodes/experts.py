"""``experts``: fan a request out to the routed experts (or a fixed list), each with its own role.

In a loop's later rounds each expert also sees the previous round's kept answers as references
(Mixture-of-Agents style), unless ``references: false``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coe.graph.nodes.base import Loc, NodeKind, NodeParams, refs
from coe.graph.state import GraphState
from coe.pipeline import Job, Trace, fan_out
from coe.types import Candidate, Message


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    system_prompt: str


class ExpertsParams(NodeParams):
    experts: list[str] | None = Field(None, description="fixed experts; default: the route's, else the pool")
    system_prompt: str | None = None
    roles: list[Role] | None = Field(None, description="assigned to the experts in turn")
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    references: bool = Field(True, description="in later rounds, show the previous round's answers")


REFERENCE_PROMPT = (
    "Other assistants answered this request as follows. Critically weigh these answers (some may be "
    "wrong), then write your own best answer.\n\n{answers}"
)


def with_system(messages: list[Message], prompt: str | None) -> list[Message]:
    if not prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def references_message(answers: list[Candidate]) -> Message:
    body = "\n\n".join(f"[{i + 1}] {c.content}" for i, c in enumerate(answers))
    return {"role": "system", "content": REFERENCE_PROMPT.format(answers=body)}


class ExpertsNode(NodeKind):
    Params = ExpertsParams

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "experts")

    def _experts(self, state: GraphState) -> tuple[list[str], dict[str, float]]:
        assert isinstance(self.params, ExpertsParams)
        if self.params.experts:
            return list(self.params.experts), {}
        route = state.get("route")
        if route is not None:
            return list(route.experts), dict(route.weights)
        return list(self.context.experts), {}

    async def __call__(self, state: GraphState) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, ExpertsParams)
        names, weights = self._experts(state)
        base = list(state["messages"])
        previous = state.get("selected") or state.get("latest") or []
        if params.references and state.get("round", 0) > 0 and previous:
            base = [*base[:-1], references_message(previous), base[-1]]
        run = state["params"]
        run = dataclasses.replace(
            run,
            max_tokens=params.max_tokens or run.max_tokens,
            temperature=params.temperature if params.temperature is not None else run.temperature,
        )
        trace = Trace(self.context.graph)
        roles = params.roles or []
        jobs = []
        for i, name in enumerate(names):
            role = roles[i % len(roles)] if roles else None
            prompt = role.system_prompt if role else params.system_prompt
            client = self.context.lookup.client(name)
            jobs.append(Job(client, with_system(base, prompt), role.name if role else None))
        candidates = await fan_out(jobs, run, trace, self.name)
        candidates = [dataclasses.replace(c, weight=weights.get(c.expert, 1.0)) for c in candidates]
        return {"latest": candidates, "history": candidates, "selected": [], "calls": trace.calls}
