"""What the API and CLI run: a named ``Pipeline`` that turns messages into an answer and a trace.

Graphs (``coe.graph``) are pipelines compiled from YAML. ``Trace`` records what happened in a run
(route decision, every expert call with its usage, selections, stops, aggregation) and is returned
to clients as the ``coe`` object.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coe.errors import ExpertError, UserError
from coe.experts.base import ExpertClient
from coe.types import Candidate, ExpertRequest, Messages, RouteDecision, Usage


@dataclass(frozen=True, slots=True)
class RunParams:
    """Per-request generation parameters a client may set."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None


@dataclass(slots=True)
class Trace:
    """Everything a run did, in order."""

    graph: str
    route: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    selections: list[dict[str, Any]] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add_route(self, node: str, decision: RouteDecision) -> None:
        self.route.append({"node": node, **decision.as_dict()})

    def add_call(self, node: str, expert: str, result: Candidate | BaseException) -> None:
        if isinstance(result, BaseException):
            self.calls.append({"node": node, "expert": expert, "error": str(result)})
        else:
            self.calls.append(
                {
                    "node": node,
                    "expert": expert,
                    "role": result.role,
                    "answer": result.content,
                    **result.usage.as_dict(),
                }
            )

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.calls:
            if "error" not in call:
                total = total + Usage(
                    call["prompt_tokens"], call["completion_tokens"], call["cost"], call["latency_s"]
                )
        return total

    @property
    def experts_called(self) -> list[str]:
        return [c["expert"] for c in self.calls]

    def as_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "route": self.route,
            "calls": self.calls,
            "selections": self.selections,
            "stops": self.stops,
            "aggregate": self.aggregate,
            "usage": self.usage.as_dict(),
            "wall_s": round(time.monotonic() - self.started, 4),
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    content: str
    trace: Trace


class Pipeline(abc.ABC):
    """A named way to answer a conversation with experts."""

    name: str
    description: str = ""
    experts: Sequence[str] = ()

    @abc.abstractmethod
    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        """Answer ``messages``; raise ``ExpertError`` when no expert could answer."""


async def call_expert(
    client: ExpertClient,
    messages: Messages,
    params: RunParams,
    trace: Trace,
    node: str,
    role: str | None = None,
) -> Candidate:
    """Call one expert and record the call (or its failure) in the trace."""
    request = ExpertRequest(
        messages, params.max_tokens, params.temperature, params.stop, params.metadata, params.json_schema
    )
    try:
        completion = await client.complete(request)
    except (ExpertError, UserError) as err:
        trace.add_call(node, client.name, err)
        raise
    candidate = Candidate(client.name, completion.content, completion.usage, role)
    trace.add_call(node, client.name, candidate)
    return candidate


@dataclass(frozen=True, slots=True)
class Job:
    """One expert call of a fan-out: who, with which messages, in which role."""

    client: ExpertClient
    messages: Messages
    role: str | None = None


async def fan_out(jobs: Sequence[Job], params: RunParams, trace: Trace, node: str) -> list[Candidate]:
    """Call experts concurrently. Calls (and failures) enter the trace in the jobs' order, not the
    order they finished; if every call failed, raise."""
    own = [Trace(trace.graph) for _ in jobs]
    results = await asyncio.gather(
        *(call_expert(j.client, j.messages, params, t, node, j.role) for j, t in zip(jobs, own, strict=True)),
        return_exceptions=True,
    )
    for job_trace in own:
        trace.calls.extend(job_trace.calls)
    candidates = [r for r in results if isinstance(r, Candidate)]
    if candidates:
        return candidates
    errors = [r for r in results if isinstance(r, BaseException)]
    for err in errors:
        if not isinstance(err, ExpertError | UserError):
            raise err
    if len(errors) == 1:
        raise errors[0]
    raise ExpertError(",".join(j.client.name for j in jobs), "; ".join(str(e) for e in errors))
