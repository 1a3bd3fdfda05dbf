"""What the API and CLI run: a named ``Pipeline`` that turns messages into an answer and a trace.

Graphs (``coe.graph``) are pipelines compiled from YAML. ``Trace`` records what happened in a run
(route decision, every expert call with its usage, selections, stops, aggregation) and is returned
to clients as the ``coe`` object.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from coe.errors import CoeError, ExpertError, UserError
from coe.experts.base import Emit, ExpertClient
from coe.types import Candidate, ExpertRequest, Messages, RouteDecision, Usage

#: told of every expert call as (expert, role, answer or error): the API's metrics set it per
#: request; a context variable, so a run nobody listens to pays one lookup per call
CALL_LISTENER: ContextVar[Callable[[str, str | None, Candidate | BaseException], None] | None] = ContextVar(
    "coe_call_listener", default=None
)


@dataclass(frozen=True, slots=True)
class RunParams:
    """Per-request generation parameters a client may set."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    #: other sampling parameters passed to the experts as given (top_p, seed, penalties)
    sampling: dict[str, Any] = field(default_factory=dict)


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

    def add_call(
        self,
        node: str,
        expert: str,
        result: Candidate | BaseException,
        role: str | None = None,
        *,
        persona: str | None = None,
        prompt: str | None = None,
    ) -> None:
        """Record one call: its ``role`` (answer, propose, judge, aggregate, annotate, roles), and
        where set the ``persona`` (role description) the expert was given and the named ``prompt``
        coe wrote for it."""
        entry: dict[str, Any] = {"node": node, "expert": expert, "role": role}
        if persona is not None:
            entry["persona"] = persona
        if prompt is not None:
            entry["prompt"] = prompt
        if isinstance(result, BaseException):
            entry["error"] = str(result)
        else:
            entry["role"] = result.role
            entry.update(answer=result.content, finish_reason=result.finish_reason, **result.usage.as_dict())
        self.calls.append(entry)

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
    finish_reason: str = "stop"


#: what ``Pipeline.stream`` yields: pieces of the answer's text, then the ``RunResult``
StreamEvent = str | RunResult


class Pipeline(abc.ABC):
    """A named way to answer a conversation with experts. ``stream`` is the required method."""

    name: str
    description: str = ""
    experts: Sequence[str] = ()

    @abc.abstractmethod
    def stream(self, messages: Messages, params: RunParams) -> AsyncGenerator[StreamEvent, None]:
        """Yield the answer's text as it is produced (all at once when it is a decision over
        finished answers), then the ``RunResult``; raise ``ExpertError`` when no expert could
        answer. Closing the stream early cancels the run and every expert call it started."""

    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        """Answer ``messages`` in one piece."""
        async with aclosing(self.stream(messages, params)) as events:
            async for event in events:
                if isinstance(event, RunResult):
                    return event
        raise CoeError(f"pipeline {self.name!r} ended without a result")


async def call_expert(
    client: ExpertClient,
    messages: Messages,
    params: RunParams,
    trace: Trace,
    node: str,
    role: str | None = None,
    emit: Emit | None = None,
    *,
    persona: str | None = None,
    prompt: str | None = None,
) -> Candidate:
    """Call one expert and record the call (or its failure) in the trace; ``emit`` (if given)
    receives the answer's text as it streams. ``role`` is what the call is for (DESIGN's roles);
    ``persona`` and ``prompt`` name the role description and the coe prompt it carries."""
    request = ExpertRequest(
        messages,
        params.max_tokens,
        params.temperature,
        params.stop,
        params.metadata,
        params.json_schema,
        params.sampling,
    )
    try:
        completion = await client.complete(request, emit)
    except (ExpertError, UserError) as err:
        trace.add_call(node, client.name, err, role, persona=persona, prompt=prompt)
        if (listener := CALL_LISTENER.get()) is not None:
            listener(client.name, role, err)
        raise
    candidate = Candidate(
        client.name, completion.content, completion.usage, role, finish_reason=completion.finish_reason
    )
    trace.add_call(node, client.name, candidate, role, persona=persona, prompt=prompt)
    if (listener := CALL_LISTENER.get()) is not None:
        listener(client.name, role, candidate)
    return candidate


@dataclass(frozen=True, slots=True)
class Job:
    """One expert call of a fan-out: who, with which messages, in which role; ``emit`` streams
    its text (for the one call whose answer is the run's answer)."""

    client: ExpertClient
    messages: Messages
    role: str | None = None
    emit: Emit | None = None
    persona: str | None = None
    prompt: str | None = None


async def fan_out(
    jobs: Sequence[Job], params: RunParams, trace: Trace, node: str, min_answers: int | None = None
) -> list[Candidate]:
    """Call experts concurrently. Calls (and failures) enter the trace in the jobs' order, not the
    order they finished. Fewer than ``min_answers`` answers (default: all of them) fail the step
    with the experts' errors; an exception that is not an expert's or the input's failure is
    raised even when other calls answered."""
    own = [Trace(trace.graph) for _ in jobs]
    results = await asyncio.gather(
        *(
            call_expert(
                j.client, j.messages, params, t, node, j.role, j.emit, persona=j.persona, prompt=j.prompt
            )
            for j, t in zip(jobs, own, strict=True)
        ),
        return_exceptions=True,
    )
    for job_trace in own:
        trace.calls.extend(job_trace.calls)
    errors = [r for r in results if isinstance(r, BaseException)]
    for err in errors:
        if not isinstance(err, ExpertError | UserError):
            raise err  # a bug or a cancellation, never hidden by the answers of others
    candidates = [r for r in results if isinstance(r, Candidate)]
    if len(candidates) >= (len(jobs) if min_answers is None else min(min_answers, len(jobs))):
        return candidates
    if len(errors) == 1:
        raise errors[0]
    failed = [j.client.name for j, r in zip(jobs, results, strict=True) if isinstance(r, BaseException)]
    raise ExpertError(",".join(failed), "; ".join(str(e) for e in errors))
