"""The node-kind interface: parameters (a pydantic model) plus one required coroutine, ``__call__``."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from coe.experts.base import ExpertClient
from coe.graph.state import GraphState

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertLookup(Protocol):
    def client(self, name: str) -> ExpertClient: ...


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a node may use: the graph's name, its expert pool and a way to reach experts."""

    graph: str
    experts: Sequence[str]
    lookup: ExpertLookup
    base_dir: Path


class NodeKind(abc.ABC):
    """One step of a graph. ``__call__`` returns the state update."""

    Params: ClassVar[type[NodeParams]] = NodeParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        self.name = name
        self.params = params
        self.context = context

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        """Expert names the params mention, with their location inside the node."""
        return []

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        """Problems only visible with context: unknown routers or aggregators, say."""
        return []

    @abc.abstractmethod
    async def __call__(self, state: GraphState) -> dict[str, Any]:
        """Run the step."""


def refs(params: BaseModel, *fields: str) -> list[tuple[Loc, str]]:
    """Expert names held in ``fields`` (a name or a list of names) of ``params``."""
    out: list[tuple[Loc, str]] = []
    for field in fields:
        value = getattr(params, field)
        if isinstance(value, str):
            out.append(((field,), value))
        elif isinstance(value, list):
            out.extend(((field, i), name) for i, name in enumerate(value) if isinstance(name, str))
    return out
