"""A lightweight executor for compiled graphs: the same node objects, walked without LangGraph.

Graphs here are sequential (each node has one successor or one branch; fan-out happens inside an
``experts`` node), so walking them is simple. LangGraph costs ~3 ms per run; bulk evaluation over
thousands of replayed questions uses this executor instead, and tests check both give the same
result.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coe.errors import CoeError
from coe.graph.conditions import CONDITIONS
from coe.graph.loader import LoadedGraph
from coe.graph.nodes import NodeKind
from coe.graph.nodes.stop import StopParams
from coe.graph.state import GraphState

#: state keys whose updates append (the ``operator.add`` reducers of GraphState)
ADDITIVE = frozenset(
    key
    for key, hint in typing.get_type_hints(GraphState, include_extras=True).items()
    if typing.get_origin(hint) is typing.Annotated
)

Step = Callable[[GraphState], str | None]


def merge(state: GraphState, update: dict[str, Any]) -> None:
    target = typing.cast(dict[str, Any], state)
    for key, value in update.items():
        target[key] = target.get(key, []) + value if key in ADDITIVE else value


@dataclass(frozen=True, slots=True)
class _Goto:
    target: str | None

    def __call__(self, state: GraphState) -> str | None:
        return self.target


@dataclass(frozen=True, slots=True)
class _Branch:
    when: str
    threshold: float | None
    then: str
    otherwise: str

    def __call__(self, state: GraphState) -> str | None:
        return self.then if CONDITIONS[self.when](state, self.threshold) else self.otherwise


@dataclass(frozen=True, slots=True)
class _Loop:
    params: StopParams

    def __call__(self, state: GraphState) -> str | None:
        return self.params.done if state.get("stopped") else self.params.next


def _transitions(loaded: LoadedGraph, nodes: dict[str, NodeKind]) -> dict[str, Step]:
    spec = loaded.spec
    steps: dict[str, Step] = {spec.exit: _Goto(None)}
    for edge in spec.edges:
        steps[edge.source] = _Goto(edge.target)
    for cond in spec.conditional_edges:
        steps[cond.source] = _Branch(cond.when, cond.threshold, cond.then, cond.otherwise)
    for name, node in nodes.items():
        if isinstance(node.params, StopParams):
            steps[name] = _Loop(node.params)
    return steps


class DirectRunner:
    def __init__(self, loaded: LoadedGraph, nodes: dict[str, NodeKind], step_limit: int) -> None:
        self.entry = loaded.spec.entry
        self.nodes = nodes
        self.steps = _transitions(loaded, nodes)
        self.step_limit = step_limit

    async def ainvoke(self, state: GraphState) -> GraphState:
        current: str | None = self.entry
        for _ in range(self.step_limit):
            if current is None:
                return state
            merge(state, await self.nodes[current](state))
            current = self.steps[current](state)
        if current is None:
            return state
        raise CoeError(f"graph ran more than {self.step_limit} steps")
