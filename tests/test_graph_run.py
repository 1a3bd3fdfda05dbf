"""Graphs run for real on the local llama.cpp experts, through LangGraph and the direct executor."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import MODEL_CACHE, REPO

from coe.config import Settings, load_experts
from coe.errors import ExpertError
from coe.experts.base import ExpertClient
from coe.experts.pool import ExpertPool
from coe.graph.catalog import graph_files
from coe.graph.compile import GraphPipeline
from coe.graph.loader import load_graph
from coe.graph.nodes.select import parse_selection, selection_schema
from coe.pipeline import RunParams
from coe.types import Chunk, ExpertRequest, Usage

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = [{"role": "user", "content": "What is 2 + 3? Reply: the answer is (NUMBER)."}]
PARAMS = RunParams(max_tokens=16)
LOCAL_GRAPHS = [p for p in graph_files(REPO / "graphs") if "mmlu_pro" not in p.parts]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ExpertPool]:
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("graphs"), models_dir=MODEL_CACHE, default_max_tokens=16
    )
    pool = ExpertPool(load_experts(REPO / "config" / "experts.yaml"), settings)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


def pipeline(path: Path, pool: ExpertPool, engine: str = "langgraph") -> GraphPipeline:
    loaded = load_graph(path, graphs_dir=REPO / "graphs", known_experts=pool.names)
    return GraphPipeline(loaded, pool, pool.names, engine=engine)


def write_graph(folder: Path, text: str) -> Path:
    path = folder / "g.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", LOCAL_GRAPHS, ids=lambda p: p.stem)
async def test_shipped_graph_runs(path: Path, pool: ExpertPool) -> None:
    result = await pipeline(path, pool).run(QUESTION, PARAMS)
    assert result.content.strip()
    trace = result.trace.as_dict()
    assert trace["calls"] and all("error" not in c for c in trace["calls"])
    assert trace["aggregate"], "every graph says how its answer was chosen"
    assert trace["usage"]["completion_tokens"] > 0


async def test_engines_take_the_same_path(pool: ExpertPool) -> None:
    path = REPO / "graphs" / "vote.yaml"
    via_langgraph = await pipeline(path, pool, "langgraph").run(
        QUESTION, RunParams(max_tokens=8, temperature=0)
    )
    direct = await pipeline(path, pool, "direct").run(QUESTION, RunParams(max_tokens=8, temperature=0))
    assert sorted(c["expert"] for c in via_langgraph.trace.calls) == sorted(
        c["expert"] for c in direct.trace.calls
    )
    assert [a["node"] for a in via_langgraph.trace.aggregate] == [a["node"] for a in direct.trace.aggregate]


JUDGE_LOOP = """
experts: [smollm2, gemma3-270m]
entry: experts
exit: answer
nodes:
  experts: {{kind: experts, max_tokens: 12}}
  judge: {{kind: select, judge: smollm2, k: 1, max_tokens: 24}}
  stop: {{kind: stop, max_rounds: {rounds}, next: experts, done: answer{extra}}}
  answer: {{kind: answer}}
edges: [[experts, judge], [judge, stop]]
"""


@pytest.mark.parametrize("engine", ["langgraph", "direct"])
async def test_judge_loop_stops_at_its_bound(pool: ExpertPool, tmp_path: Path, engine: str) -> None:
    graph = write_graph(tmp_path, JUDGE_LOOP.format(rounds=2, extra=", condition: never"))
    result = await pipeline(graph, pool, engine).run(QUESTION, PARAMS)
    trace = result.trace.as_dict()
    assert [s["round"] for s in trace["stops"]] == [1, 2]
    assert trace["stops"][-1]["reason"] == "reached max_rounds=2"
    judged = [c for c in trace["calls"] if c.get("role") == "judge"]
    assert len(judged) == 2 and {c["expert"] for c in judged} == {"smollm2"}
    assert len(trace["selections"]) == 2
    for selection in trace["selections"]:
        assert len(selection["selected"]) == 1
        assert "fallback" in selection
        if selection["fallback"]:
            assert "seeded random choice" in selection["reason"]
    assert result.content in [c["answer"] for c in trace["calls"] if c.get("role") != "judge"]


async def test_stop_condition_ends_loop_early(pool: ExpertPool, tmp_path: Path) -> None:
    text = JUDGE_LOOP.replace("entry: experts", "entry: route").format(
        rounds=5, extra=", condition: confident"
    )
    text = text.replace("nodes:\n", "nodes:\n  route: {kind: route, router: fixed}\n")
    text = text.replace("edges: [", "edges: [[route, experts], ")
    result = await pipeline(write_graph(tmp_path, text), pool).run(QUESTION, PARAMS)
    stops = result.trace.stops
    assert len(stops) == 1 and stops[0]["stop"] and stops[0]["reason"] == "condition confident holds"


async def test_moderator_is_asked_each_round(pool: ExpertPool, tmp_path: Path) -> None:
    graph = write_graph(tmp_path, JUDGE_LOOP.format(rounds=2, extra=", moderator: gemma3-270m"))
    result = await pipeline(graph, pool).run(QUESTION, PARAMS)
    trace = result.trace.as_dict()
    first = trace["stops"][0]
    assert first["reason"].startswith("moderator")
    assert any(
        c["role"] == "judge" and c["node"] == "stop" and c["expert"] == "gemma3-270m" for c in trace["calls"]
    )
    assert len(trace["stops"]) in (1, 2)


async def test_roles_and_references(pool: ExpertPool, tmp_path: Path) -> None:
    graph = write_graph(
        tmp_path,
        """
experts: [smollm2, smollm2-warm]
entry: experts
exit: answer
nodes:
  experts:
    kind: experts
    roles:
      - {name: solver, system_prompt: Solve it.}
      - {name: critic, system_prompt: Check the solution.}
  stop: {kind: stop, max_rounds: 2, next: experts, done: vote}
  vote: {kind: aggregate, aggregator: vote}
  answer: {kind: answer}
edges: [[experts, stop], [vote, answer]]
""",
    )
    result = await pipeline(graph, pool).run(QUESTION, PARAMS)
    calls = result.trace.calls
    assert {c["role"] for c in calls} == {"answer"}
    assert [c["persona"] for c in calls if c["expert"] == "smollm2"] == ["solver", "solver"]
    assert [c["persona"] for c in calls if c["expert"] == "smollm2-warm"] == ["critic", "critic"]
    assert [c.get("prompt") for c in calls] == [None, None, "moa.references", "moa.references"]
    first, second = [c["prompt_tokens"] for c in calls if c["expert"] == "smollm2"]
    assert second > first, "the second round sees the first round's answers"


class _Scripted(ExpertClient):
    """An expert of our own interface that always answers ``text`` (for the judge's parse path)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        yield Chunk(self.text, Usage(10, 5), "stop")


class _Failing(ExpertClient):
    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        raise ExpertError(self.name, "connection refused")
        yield Chunk()  # pragma: no cover - makes this an async generator


class _Lookup:
    def __init__(self, *clients: ExpertClient) -> None:
        self.clients = {c.name: c for c in clients}

    def client(self, name: str) -> ExpertClient:
        return self.clients[name]


SELECT_ONLY = """
experts: [a, b, c]
entry: experts
exit: answer
nodes:
  experts: {kind: experts}
  judge: {kind: select, judge: judge, k: 1, seed: 7}
  answer: {kind: answer}
edges: [[experts, judge], [judge, answer]]
"""


@pytest.mark.parametrize(
    ("verdict", "fallback"),
    [('{"selected": [2]}', False), ("I like the second one best.", True), ('{"selected": [9]}', True)],
)
async def test_select_parses_or_falls_back_with_a_seeded_choice(
    tmp_path: Path, verdict: str, fallback: bool
) -> None:
    lookup = _Lookup(*(_Scripted(n, f"answer from {n}") for n in "abc"), _Scripted("judge", verdict))
    loaded = load_graph(write_graph(tmp_path, SELECT_ONLY))
    runs = [await GraphPipeline(loaded, lookup, ["a", "b", "c"]).run(QUESTION, PARAMS) for _ in range(2)]
    selections = [r.trace.selections[0] for r in runs]
    assert selections[0] == selections[1], "the fallback choice is seeded"
    assert selections[0]["fallback"] is fallback
    if fallback:
        assert "seeded random choice" in selections[0]["reason"]
    else:
        assert selections[0]["selected"] == ["c"] and runs[0].content == "answer from c"


async def test_selection_schema_matches_the_parser() -> None:
    schema = selection_schema(3, 2)
    assert schema["properties"]["selected"]["items"]["maximum"] == 2
    assert parse_selection('{"selected": [1, 1, 0, 2]}', 3, 2) == [1, 0]
    assert parse_selection('{"selected": []}', 3, 2) is None
    assert parse_selection("no json", 3, 1) is None


FAN_OUT = """
experts: [a, b, broken]
entry: experts
exit: answer
nodes:
  experts: {{kind: experts{extra}}}
  vote: {{kind: aggregate, aggregator: vote}}
  answer: {{kind: answer}}
edges: [[experts, vote], [vote, answer]]
"""


@pytest.mark.parametrize("engine", ["langgraph", "direct"])
async def test_fan_out_needs_every_answer_unless_min_answers_says_otherwise(
    tmp_path: Path, engine: str
) -> None:
    lookup = _Lookup(
        _Scripted("a", "the answer is (B)"), _Scripted("b", "the answer is (B)"), _Failing("broken")
    )
    strict = load_graph(write_graph(tmp_path, FAN_OUT.format(extra="")))
    with pytest.raises(ExpertError, match="broken"):
        await GraphPipeline(strict, lookup, ["a", "b", "broken"], engine=engine).run(QUESTION, PARAMS)
    lenient = load_graph(write_graph(tmp_path, FAN_OUT.format(extra=", min_answers: 2")))
    result = await GraphPipeline(lenient, lookup, ["a", "b", "broken"], engine=engine).run(QUESTION, PARAMS)
    assert result.content == "the answer is (B)"
    assert [c.get("error") is not None for c in result.trace.calls] == [False, False, True]
