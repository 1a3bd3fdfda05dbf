"""``experts``: fan a request out to the routed experts (or a fixed list), each with its own role.

Every call has role ``answer``; ``roles`` give the experts personas (system prompts, named in the
trace as ``persona``). In a loop's later rounds each expert also sees the answers the loop kept
from its previous round, injected as Mixture-of-Agents does (``references_prompt``), unless
``references: false``. A route that drew an expert twice calls it twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coe.experts.base import Emit
from coe.graph.nodes.base import Loc, NodeKind, NodeParams, Problem, refs
from coe.graph.state import GraphState
from coe.pipeline import Job, Trace, fan_out
from coe.prompts import inject_references, prompt_problem, resolve_prompt
from coe.types import Message


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
    references_prompt: str = Field("moa.references", description="a prompt name (coe.prompts) or its text")
    min_answers: int | None = Field(
        None, gt=0, description="go on when at least this many experts answered (default: all)"
    )


def with_system(messages: list[Message], prompt: str | None) -> list[Message]:
    if not prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


class ExpertsNode(NodeKind):
    Params = ExpertsParams

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        return refs(params, "experts")

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, ExpertsParams)
        problem = prompt_problem(params.references_prompt, "moa.references")
        return [(("references_prompt",), problem)] if problem else []

    def _experts(self, state: GraphState) -> tuple[list[str], dict[str, float]]:
        assert isinstance(self.params, ExpertsParams)
        if self.params.experts:
            return list(self.params.experts), {}
        route = state.get("route")
        if route is not None:
            return list(route.experts), dict(route.weights)
        return list(self.context.experts), {}

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, ExpertsParams)
        names, weights = self._experts(state)
        base = list(state["messages"])
        previous = state.get("carry", {}).get(self.loop, []) if self.loop else []
        prompt = None
        if params.references and self.round(state) > 0 and previous:
            prompt = resolve_prompt(params.references_prompt, f"{self.name}.references_prompt")
            base = inject_references(base, [c.content for c in previous], prompt)
        run = state["params"]
        run = dataclasses.replace(
            run,
            max_tokens=params.max_tokens or run.max_tokens,
            temperature=params.temperature if params.temperature is not None else run.temperature,
        )
        trace = Trace(self.context.graph)
        roles = params.roles or []
        # With one expert its answer is the run's answer: stream it (``emit`` is set only then).
        emit = emit if len(names) == 1 else None
        jobs = []
        for i, name in enumerate(names):
            role = roles[i % len(roles)] if roles else None
            system = role.system_prompt if role else params.system_prompt
            client = self.context.lookup.client(name)
            persona = role.name if role else None
            prompt_name = prompt.name if prompt else None
            jobs.append(Job(client, with_system(base, system), "answer", emit, persona, prompt_name))
        candidates = await fan_out(jobs, run, trace, self.name, params.min_answers)
        candidates = [dataclasses.replace(c, weight=weights.get(c.expert, 1.0)) for c in candidates]
        # New answers supersede what was selected or aggregated from older ones.
        return {
            "latest": candidates,
            "history": candidates,
            "selected": [],
            "aggregate": None,
            "calls": trace.calls,
        }
