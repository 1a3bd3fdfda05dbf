"""The node-kind interface: parameters (a pydantic model) plus one required coroutine, ``__call__``."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from coe.experts.base import Emit, ExpertClient
from coe.graph.cache import MemoryCache, TextCache
from coe.graph.state import GraphState

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertLookup(Protocol):
    def client(self, name: str) -> ExpertClient: ...


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a node may use: the graph's name, its expert pool and a way to reach experts; which
    loop each node belongs to (node name -> the loop's stop node); a cache for what the graph
    generates once (role descriptions); the graph's description."""

    graph: str
    experts: Sequence[str]
    lookup: ExpertLookup
    base_dir: Path
    loops: Mapping[str, str] = field(default_factory=dict)
    cache: TextCache = field(default_factory=MemoryCache)
    description: str = ""


class NodeKind(abc.ABC):
    """One step of a graph. ``__call__`` returns the state update.

    ``emit`` is given only to a node whose output becomes the run's answer unchanged (its one
    successor is the exit ``answer`` node): a node that then makes the answer with one generation
    streams that generation's text through it.
    """

    Params: ClassVar[type[NodeParams]] = NodeParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        self.name = name
        self.params = params
        self.context = context

    @property
    def loop(self) -> str | None:
        """The loop this node is part of (named by its stop node), or None."""
        return self.context.loops.get(self.name)

    def round(self, state: GraphState) -> int:
        """Completed rounds of this node's loop (0 outside loops)."""
        return state.get("rounds", {}).get(self.loop, 0) if self.loop else 0

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        """Expert names the params mention, with their location inside the node."""
        return []

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        """Problems only visible with context: unknown routers or aggregators, say."""
        return []

    @abc.abstractmethod
    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        """Run the step."""


def refs(params: BaseModel, *fields: str) -> list[tuple[Loc, str]]:
    """Expert names held in ``fields`` (a name or a list of names) of ``params``."""
    out: list[tuple[Loc, str]] = []
    for key in fields:
        value = getattr(params, key)
        if isinstance(value, str):
            out.append(((key,), value))
        elif isinstance(value, list):
            out.extend(((key, i), name) for i, name in enumerate(value) if isinstance(name, str))
    return out


class BranchingNode(NodeKind):
    """A node whose work fans out into parallel graph branches (LangGraph's ``Send``): ``plan``
    reads the state and returns its own update plus one job per branch; each job runs in its own
    branch (``branch``, concurrently); ``join`` combines the results, in plan order, into the
    state update. Both executors run these three steps (see ``coe.graph.direct``)."""

    @abc.abstractmethod
    async def plan(self, state: GraphState) -> tuple[dict[str, Any], list[Any]]:
        """The update to apply before branching (trace calls made while planning, say) and the
        branches' jobs."""

    @abc.abstractmethod
    async def branch(self, job: Any, emit: Emit | None = None) -> Any:
        """Run one job; ``emit`` is given when the node streams the run's answer."""

    @abc.abstractmethod
    async def join(self, state: GraphState, results: list[Any]) -> dict[str, Any]:
        """The node's update from every branch's result, in plan order."""

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        raise TypeError(f"node {self.name!r} branches: the executors run its plan, branch and join")
