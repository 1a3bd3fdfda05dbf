"""Compile a checked graph into a LangGraph ``StateGraph`` once; run it with ``ainvoke``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph

from coe.graph.conditions import CONDITIONS
from coe.graph.direct import DirectRunner
from coe.graph.loader import LoadedGraph
from coe.graph.nodes import NODE_KINDS, BuildContext, NodeKind
from coe.graph.nodes.base import ExpertLookup
from coe.graph.nodes.stop import StopParams
from coe.graph.state import GraphState
from coe.pipeline import Pipeline, RunParams, RunResult, Trace
from coe.types import Messages


def _branch(when: str, threshold: float | None) -> Any:
    condition = CONDITIONS[when]

    def decide(state: GraphState) -> str:
        return "then" if condition(state, threshold) else "else"

    return decide


def _stop_branch(state: GraphState) -> str:
    return "done" if state.get("stopped") else "next"


def build_nodes(loaded: LoadedGraph, context: BuildContext) -> dict[str, NodeKind]:
    return {
        name: NODE_KINDS.get(node.kind)(name, loaded.params[name], context)
        for name, node in loaded.spec.nodes.items()
    }


def compile_graph(loaded: LoadedGraph, nodes: dict[str, NodeKind]) -> Any:
    spec = loaded.spec
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    for name, node in nodes.items():
        graph.add_node(name, node.__call__)
    graph.add_edge(START, spec.entry)
    for edge in spec.edges:
        graph.add_edge(edge.source, edge.target)
    for cond in spec.conditional_edges:
        graph.add_conditional_edges(
            cond.source, _branch(cond.when, cond.threshold), {"then": cond.then, "else": cond.otherwise}
        )
    for name, node in nodes.items():
        if isinstance(node.params, StopParams):
            graph.add_conditional_edges(
                name, _stop_branch, {"next": node.params.next, "done": node.params.done}
            )
    graph.add_edge(spec.exit, END)
    return graph.compile(name=loaded.name)


def _step_budget(loaded: LoadedGraph) -> int:
    rounds = [p.max_rounds for p in loaded.params.values() if isinstance(p, StopParams)]
    per_round = len(loaded.spec.nodes) + 1
    return per_round * (sum(rounds) + 1) + 10


class GraphPipeline(Pipeline):
    """A graph compiled over one expert pool."""

    def __init__(
        self, loaded: LoadedGraph, lookup: ExpertLookup, pool: Sequence[str], engine: str = "langgraph"
    ) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.description = loaded.spec.description
        experts = loaded.spec.experts if isinstance(loaded.spec.experts, list) else list(pool)
        context = BuildContext(loaded.name, experts, lookup, loaded.path.parent)
        self.nodes = build_nodes(loaded, context)
        used = dict.fromkeys([*experts, *(name for _, name in loaded.expert_refs())])
        self.experts = list(used)
        self.compiled = compile_graph(loaded, self.nodes)
        self._limit = _step_budget(loaded)
        self.direct = DirectRunner(loaded, self.nodes, self._limit) if engine == "direct" else None

    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        trace = Trace(self.name)
        state: GraphState = {"messages": list(messages), "params": params, "round": 0}
        if self.direct is not None:
            final = await self.direct.ainvoke(state)
        else:
            final = await self.compiled.ainvoke(state, {"recursion_limit": self._limit})
        trace.route = final.get("route_log", [])
        trace.calls = final.get("calls", [])
        trace.selections = final.get("selections", [])
        trace.stops = final.get("stops", [])
        trace.aggregate = final.get("aggregates", [])
        return RunResult(final["answer"], trace)

    def mermaid(self) -> str:
        text: str = self.compiled.get_graph().draw_mermaid()
        return text
