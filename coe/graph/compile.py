"""Compile a checked graph once into a runnable pipeline over two executors with one contract:
LangGraph (``StateGraph``, the serving engine) and the direct executor (``coe.graph.direct``,
for bulk evaluation). Both run the same node objects, stream the same way and return the same
answers and traces; the graph tests run every case under both.

Streaming: the nodes whose output becomes the answer unchanged (their one successor is the exit
``answer`` node) get an ``emit`` callback; a run started with ``stream`` passes text emitted there
to the caller as it is generated.

Parallel branches: a branching node ``X`` (a ``propose`` layer) becomes three LangGraph nodes:
``X`` plans the branches, a ``Send`` per job runs ``X.branch`` once per branch concurrently, and
``X.join`` (which LangGraph runs once every branch is done) combines their results; the graph's
edges leave ``X`` from ``X.join``. The direct executor runs the same three steps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from coe.experts.base import Emit
from coe.graph.cache import CacheSlot, TextCache
from coe.graph.conditions import CONDITIONS
from coe.graph.direct import DirectRunner, join_update, plan_update
from coe.graph.loader import LoadedGraph
from coe.graph.nodes import NODE_KINDS, BuildContext, NodeKind
from coe.graph.nodes.base import BranchingNode, ExpertLookup
from coe.graph.nodes.stop import StopParams
from coe.graph.state import GraphState
from coe.graph.structure import loops, successors
from coe.pipeline import Pipeline, RunParams, RunResult, StreamEvent, Trace
from coe.types import Messages

ENGINES = ("langgraph", "direct")
_EMIT = "coe_emit"  # LangGraph's configurable key for the run's emit callback


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


def answer_sources(loaded: LoadedGraph) -> frozenset[str]:
    """Nodes whose output the exit ``answer`` node passes on unchanged: their one way on is to it."""
    spec = loaded.spec
    if spec.nodes[spec.exit].kind != "answer":
        return frozenset()
    following = successors(spec)
    return frozenset(
        name
        for name, node in spec.nodes.items()
        if following[name] == [spec.exit] and node.kind != "stop" and name != spec.exit
    )


StepFn = Callable[[Any, RunnableConfig], Coroutine[Any, Any, dict[str, Any]]]


def _emit(config: RunnableConfig, streams: bool) -> Emit | None:
    emit: Emit | None = config.get("configurable", {}).get(_EMIT) if streams else None
    return emit


def _step(node: NodeKind, streams: bool) -> StepFn:
    """A LangGraph node function: the node, with the run's emit callback where it streams."""

    async def step(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        return await node(state, _emit(config, streams))

    return step


def _branching(graph: StateGraph[GraphState], node: BranchingNode, streams: bool) -> None:
    name = node.name

    async def plan(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        return await plan_update(node, state)

    def fan(state: GraphState) -> list[Send] | str:
        jobs = state.get("plans", {}).get(name, [])
        return [
            Send(f"{name}.branch", {"index": i, "job": job}) for i, job in enumerate(jobs)
        ] or f"{name}.join"

    async def branch(payload: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        result = await node.branch(payload["job"], _emit(config, streams))
        return {"branches": {name: {payload["index"]: result}}}

    async def join(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        return await join_update(node, state)

    graph.add_node(name, cast(Any, plan))
    graph.add_node(f"{name}.branch", cast(Any, branch))
    graph.add_node(f"{name}.join", cast(Any, join))
    graph.add_conditional_edges(name, fan, [f"{name}.branch", f"{name}.join"])
    graph.add_edge(f"{name}.branch", f"{name}.join")


def exit_step(nodes: dict[str, NodeKind], name: str) -> str:
    """The LangGraph node a graph node's outgoing edges leave from."""
    return f"{name}.join" if isinstance(nodes[name], BranchingNode) else name


def compile_graph(loaded: LoadedGraph, nodes: dict[str, NodeKind], streaming: frozenset[str]) -> Any:
    spec = loaded.spec
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    for name, node in nodes.items():
        if isinstance(node, BranchingNode):
            _branching(graph, node, name in streaming)
        else:
            graph.add_node(name, cast(Any, _step(node, name in streaming)))
    graph.add_edge(START, spec.entry)
    for edge in spec.edges:
        graph.add_edge(exit_step(nodes, edge.source), edge.target)
    for cond in spec.conditional_edges:
        graph.add_conditional_edges(
            exit_step(nodes, cond.source),
            _branch(cond.when, cond.threshold),
            {"then": cond.then, "else": cond.otherwise},
        )
    for name, node in nodes.items():
        if isinstance(node.params, StopParams):
            graph.add_conditional_edges(
                name, _stop_branch, {"next": node.params.next, "done": node.params.done}
            )
    graph.add_edge(exit_step(nodes, spec.exit), END)
    return graph.compile(name=loaded.name)


def _step_budget(loaded: LoadedGraph, nodes: dict[str, NodeKind]) -> int:
    rounds = [p.max_rounds for p in loaded.params.values() if isinstance(p, StopParams)]
    per_round = len(nodes) + 2 * sum(isinstance(n, BranchingNode) for n in nodes.values()) + 1
    return per_round * (sum(rounds) + 1) + 10


class GraphPipeline(Pipeline):
    """A graph compiled over one expert pool, run by ``engine`` (``langgraph`` or ``direct``)."""

    def __init__(
        self,
        loaded: LoadedGraph,
        lookup: ExpertLookup,
        pool: Sequence[str],
        engine: str = "langgraph",
        cache: TextCache | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
        self.loaded = loaded
        self.name = loaded.name
        self.description = loaded.spec.description
        self.engine = engine
        experts = loaded.spec.experts if isinstance(loaded.spec.experts, list) else list(pool)
        self.cache = CacheSlot(cache)
        context = BuildContext(
            loaded.name,
            experts,
            lookup,
            loaded.path.parent,
            loops(loaded.spec),
            self.cache,
            loaded.spec.description,
        )
        self.nodes = build_nodes(loaded, context)
        used = dict.fromkeys([*experts, *(name for _, name in loaded.expert_refs())])
        self.experts = list(used)
        self.streaming = answer_sources(loaded)
        self.compiled = compile_graph(loaded, self.nodes, self.streaming)
        self._limit = _step_budget(loaded, self.nodes)
        self.direct = DirectRunner(loaded, self.nodes, self._limit, self.streaming)

    async def _invoke(self, messages: Messages, params: RunParams, emit: Emit | None) -> RunResult:
        trace = Trace(self.name)
        state: GraphState = {"messages": list(messages), "params": params}
        if self.engine == "direct":
            final = await self.direct.ainvoke(state, emit)
        else:
            config: RunnableConfig = {"recursion_limit": self._limit, "configurable": {_EMIT: emit}}
            final = await self.compiled.ainvoke(state, config)
        trace.route = final.get("route_log", [])
        trace.calls = final.get("calls", [])
        trace.selections = final.get("selections", [])
        trace.stops = final.get("stops", [])
        trace.aggregate = final.get("aggregates", [])
        return RunResult(final["answer"], trace, final.get("finish_reason", "stop"))

    def use_cache(self, cache: TextCache) -> None:
        """Keep what the graph generates once (role descriptions) in ``cache`` from now on."""
        self.cache.target = cache

    async def run(self, messages: Messages, params: RunParams) -> RunResult:
        return await self._invoke(messages, params, None)

    async def stream(self, messages: Messages, params: RunParams) -> AsyncGenerator[StreamEvent, None]:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.create_task(self._invoke(messages, params, pieces.put_nowait))
        task.add_done_callback(lambda _: pieces.put_nowait(None))
        streamed: list[str] = []
        try:
            while (piece := await pieces.get()) is not None:
                streamed.append(piece)
                yield piece
            result = await task
        finally:
            if not task.done():  # the caller went away or failed: cancel the run and its calls
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        sent = "".join(streamed)
        if result.content.startswith(sent) and len(result.content) > len(sent):
            yield result.content[len(sent) :]  # an answer decided over finished answers: all at once
        yield result

    def mermaid(self) -> str:
        text: str = self.compiled.get_graph().draw_mermaid()
        return text
