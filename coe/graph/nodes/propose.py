"""``propose``: one layer (MoA) or round (SMoA) of proposers, each a parallel graph branch.

``count`` proposers (default: one per expert) take the experts in turn (the routed ones, a fixed
list, or the pool), so the experts cycle when there are more proposers than experts. Each gets a
role description where the node has them: fixed ``roles``, or ``generate_roles`` (SMoA: written
once per graph and task by one expert, then cached). In its loop's later rounds every proposer
also sees the answers the loop kept from the round before, injected as Mixture-of-Agents does
(the aggregate-and-synthesise instruction and a numbered list in the system message, reasoning
between ``<think>`` tags stripped). Every call has role ``propose``.

The executors run it as three steps: ``plan`` (role descriptions, messages, one job per
proposer), ``branch`` (one call; LangGraph sends each job to its own branch) and ``join`` (the
answers in proposer order; fewer than ``min_answers`` fail the step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from coe.errors import ExpertError, UserError
from coe.experts.base import Emit
from coe.graph.nodes.base import BranchingNode, BuildContext, Loc, NodeParams, Problem, refs
from coe.graph.nodes.experts import Role, with_system
from coe.graph.roles import RoleGeneration, RoleWriter, task_of
from coe.graph.state import GraphState
from coe.pipeline import RunParams, Trace, call_expert
from coe.prompts import inject_references, prompt_problem, resolve_prompt
from coe.types import Candidate, Messages


class ProposeParams(NodeParams):
    experts: list[str] | None = Field(None, description="fixed experts; default: the route's, else the pool")
    count: int | None = Field(None, gt=0, description="proposers (default: one per expert); experts cycle")
    roles: list[Role] | None = Field(None, description="role descriptions, assigned to the proposers in turn")
    generate_roles: RoleGeneration | None = Field(None, description="have an expert write them (SMoA)")
    system_prompt: str | None = Field(None, description="for proposers without a role")
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    references: bool = Field(True, description="in later rounds, show the answers the loop kept")
    references_prompt: str = Field("moa.references", description="a prompt name (coe.prompts) or its text")
    min_answers: int | None = Field(None, gt=0, description="go on with this many answers (default: all)")

    @model_validator(mode="after")
    def _one_kind_of_roles(self) -> ProposeParams:
        if self.roles and self.generate_roles:
            raise ValueError("give roles or generate_roles, not both")
        return self


@dataclass(frozen=True, slots=True)
class ProposeJob:
    """One proposer's call, planned."""

    expert: str
    messages: Messages
    params: RunParams
    persona: str | None
    prompt: str | None
    streams: bool


@dataclass(frozen=True, slots=True)
class Proposed:
    """A branch's outcome: the answer or the expert's failure, and its trace calls."""

    expert: str
    result: Candidate | ExpertError | UserError
    calls: list[dict[str, Any]]


class ProposeNode(BranchingNode):
    Params = ProposeParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, ProposeParams)
        self.writer: RoleWriter | None = None
        if params.generate_roles is not None:
            spec = params.generate_roles
            prompt = resolve_prompt(spec.prompt, f"{name}.generate_roles.prompt")
            self.writer = RoleWriter(context.graph, name, spec, prompt, context.cache)

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        assert isinstance(params, ProposeParams)
        found = refs(params, "experts")
        if params.generate_roles is not None:
            found.append((("generate_roles", "expert"), params.generate_roles.expert))
        return found

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        assert isinstance(params, ProposeParams)
        problems: list[Problem] = []
        if problem := prompt_problem(params.references_prompt, "moa.references"):
            problems.append((("references_prompt",), problem))
        if params.generate_roles and (
            problem := prompt_problem(params.generate_roles.prompt, "roles.generate")
        ):
            problems.append((("generate_roles", "prompt"), problem))
        return problems

    def _experts(self, state: GraphState) -> list[str]:
        assert isinstance(self.params, ProposeParams)
        route = state.get("route")
        if self.params.experts:
            return list(self.params.experts)
        return list(route.experts) if route is not None else list(self.context.experts)

    async def _personas(
        self, state: GraphState, n: int
    ) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
        """(name, description) per role, and the calls made to write them."""
        params = self.params
        assert isinstance(params, ProposeParams)
        if params.roles:
            return [(r.name, r.system_prompt) for r in params.roles], []
        if self.writer is None:
            return [], []
        assert params.generate_roles is not None
        task = task_of(state["params"].metadata, params.generate_roles.task)
        # Written in a loop's first round; later rounds reuse them (if they were written at all).
        first = self.round(state) == 0
        written = await self.writer.roles(self.context.lookup, task, n, state["params"], generate=first)
        return [(f"role {i + 1}", text) for i, text in enumerate(written.roles)], written.calls

    async def plan(self, state: GraphState) -> tuple[dict[str, Any], list[Any]]:
        params = self.params
        assert isinstance(params, ProposeParams)
        experts = self._experts(state)
        if not experts:
            raise UserError(f"node {self.name!r}: no experts to propose")
        n = params.count or len(experts)
        personas, calls = await self._personas(state, n)
        base = list(state["messages"])
        previous = state.get("carry", {}).get(self.loop, []) if self.loop else []
        prompt = None
        if params.references and self.round(state) > 0 and previous:
            prompt = resolve_prompt(params.references_prompt, f"{self.name}.references_prompt")
            base = inject_references(base, [c.content for c in previous], prompt)
        run = dataclasses.replace(
            state["params"],
            max_tokens=params.max_tokens or state["params"].max_tokens,
            temperature=params.temperature if params.temperature is not None else state["params"].temperature,
        )
        prompt_name = prompt.name if prompt else None
        jobs = []
        for i in range(n):
            persona = personas[i % len(personas)] if personas else None
            system = persona[1] if persona else params.system_prompt
            messages = with_system(base, system)
            name = persona[0] if persona else None
            jobs.append(ProposeJob(experts[i % len(experts)], messages, run, name, prompt_name, n == 1))
        return {"calls": calls}, jobs

    async def branch(self, job: Any, emit: Emit | None = None) -> Any:
        assert isinstance(job, ProposeJob)
        trace = Trace(self.context.graph)
        try:
            answer = await call_expert(
                self.context.lookup.client(job.expert),
                job.messages,
                job.params,
                trace,
                self.name,
                "propose",
                emit if job.streams else None,
                persona=job.persona,
                prompt=job.prompt,
            )
        except (ExpertError, UserError) as err:
            return Proposed(job.expert, err, trace.calls)
        return Proposed(job.expert, answer, trace.calls)

    async def join(self, state: GraphState, results: list[Any]) -> dict[str, Any]:
        assert isinstance(self.params, ProposeParams)
        outcomes = [r for r in results if isinstance(r, Proposed)]
        calls = [call for r in outcomes for call in r.calls]
        answers = [r.result for r in outcomes if isinstance(r.result, Candidate)]
        failed = [r for r in outcomes if not isinstance(r.result, Candidate)]
        needed = (
            len(outcomes) if self.params.min_answers is None else min(self.params.min_answers, len(outcomes))
        )
        if len(answers) < needed:
            if len(failed) == 1 and isinstance(failed[0].result, ExpertError | UserError):
                raise failed[0].result
            raise ExpertError(",".join(r.expert for r in failed), "; ".join(str(r.result) for r in failed))
        # New answers supersede what was selected or aggregated from older ones.
        return {"latest": answers, "history": answers, "selected": [], "aggregate": None, "calls": calls}
