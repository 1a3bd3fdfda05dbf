"""One suite over both graph executors: every local graph — shipped ones and the shapes the engine
must handle (loops with judges and moderators, conditional edges both ways, parallel proposer
branches, two loops in one graph) — runs under LangGraph and under the direct executor, streamed
and not, and they must give the same answers and traces.

The experts are replayed real outputs (tests/data slice) answering under the local experts'
names, so each run is deterministic: a judge or moderator that replies with prose takes the
seeded fallback, and a role writer's prose yields no role descriptions, which is part of what
must match. Nothing is cached between runs (each would otherwise skip the role call).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from coe.experts.base import ExpertClient
from coe.experts.replay import ReplayBank
from coe.graph.cache import TextCache
from coe.graph.catalog import graph_files
from coe.graph.compile import ENGINES, GraphPipeline
from coe.graph.loader import load_graph
from coe.pipeline import RunParams, RunResult
from coe.questions.datasets import Question, load_mmlu_pro, load_validation_shots
from coe.questions.prompts import build_messages
from coe.questions.tokens import TokenCounter

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLICE = REPO / "tests" / "data" / "mmlu_pro"
#: the local experts' names, answered by three real models' recorded outputs
AS = {
    "smollm2": "Meta-Llama-3_1-8B-Instruct",
    "smollm2-warm": "Mistral-7B-Instruct-v0.2",
    "gemma3-270m": "gemma-7b",
}
LOCAL_GRAPHS = [p for p in graph_files(REPO / "graphs") if "mmlu_pro" not in p.parts]
#: graphs whose models run in-process for real (not replayed): one short question keeps them quick
IN_PROCESS = {"mot"}

SHAPES = {
    "loop-judge-moderator": """
experts: [smollm2, smollm2-warm, gemma3-270m]
entry: experts
exit: answer
nodes:
  experts: {kind: experts}
  judge: {kind: select, judge: smollm2, k: 2}
  stop: {kind: stop, max_rounds: 3, next: experts, done: vote, moderator: gemma3-270m}
  vote: {kind: aggregate, aggregator: choice-vote}
  answer: {kind: answer}
edges: [[experts, judge], [judge, stop], [vote, answer]]
""",
    "conditional-agree": """
experts: [smollm2, smollm2-warm]
entry: experts
exit: answer
nodes:
  experts: {kind: experts}
  vote: {kind: aggregate, aggregator: choice-vote}
  judge: {kind: select, judge: smollm2-warm, k: 1}
  answer: {kind: answer}
conditional_edges:
  - {from: experts, when: agree, then: vote, else: judge}
edges: [[vote, answer], [judge, answer]]
""",
    "loop-until-agree": """
experts: [smollm2, gemma3-270m]
entry: experts
exit: answer
nodes:
  experts: {kind: experts}
  stop: {kind: stop, max_rounds: 2, next: experts, done: vote, condition: agree}
  vote: {kind: aggregate, aggregator: vote}
  answer: {kind: answer}
edges: [[experts, stop], [vote, answer]]
""",
    # an SMoA loop (judge decides stop) after a MoA loop: each loop counts its own rounds and
    # hands its own answers on
    "two-loops": """
experts: [smollm2, smollm2-warm, gemma3-270m]
entry: layer
exit: answer
nodes:
  layer: {kind: propose, temperature: 0.7}
  layers: {kind: stop, max_rounds: 2, next: layer, done: debate}
  debate:
    kind: propose
    count: 4
    roles: [{name: a, system_prompt: You are careful.}, {name: b, system_prompt: You are bold.}]
  judge: {kind: select, judge: smollm2, k: 2, decide_stop: true, seed: 3}
  rounds: {kind: stop, max_rounds: 2, condition: judge-stop, next: debate, done: aggregate}
  aggregate: {kind: aggregate, aggregator: synthesize, params: {expert: gemma3-270m}}
  answer: {kind: answer}
edges: [[layer, layers], [debate, judge], [judge, rounds], [aggregate, answer]]
""",
    # cascades: one expert at a time until an answer is stated as asked; two, then one, until the
    # last two agree (or the experts run out)
    "cascade-parsed": """
experts: [smollm2, smollm2-warm, gemma3-270m]
entry: cascade
exit: answer
nodes:
  cascade: {kind: cascade, accept: [{test: parsed}]}
  answer: {kind: answer}
edges: [[cascade, answer]]
""",
    "cascade-agree": """
experts: [gemma3-270m, smollm2-warm, smollm2]
entry: cascade
exit: answer
nodes:
  cascade: {kind: cascade, steps: [2, 1], accept: [{test: agree, m: 2}, {test: parsed}], combine: last}
  answer: {kind: answer}
edges: [[cascade, answer]]
""",
}


class NoCache(TextCache):
    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str) -> None:
        pass


class ReplayLookup:
    def __init__(self) -> None:
        real = ReplayBank.load(SLICE / "outputs")
        files = {name: SLICE / "outputs" / f"{model}.jsonl.gz" for name, model in AS.items()}
        bank = ReplayBank(SLICE / "outputs", files, {name: real.info(model) for name, model in AS.items()})
        counter = TokenCounter()
        self.clients = {name: bank.expert(name, counter) for name in AS}

    def client(self, name: str) -> ExpertClient:
        return self.clients[name]


@pytest.fixture(scope="module")
def lookup() -> ReplayLookup:
    return ReplayLookup()


@pytest.fixture(scope="module")
def questions() -> list[tuple[list[Any], RunParams]]:
    shots = load_validation_shots(SLICE)
    chosen: list[Question] = load_mmlu_pro(SLICE / "test_slice.jsonl")[::21]
    return [
        (build_messages(q, shots.get(q.category, [])), RunParams(max_tokens=64, metadata=q.metadata()))
        for q in chosen
    ]


def comparable(result: RunResult) -> dict[str, Any]:
    """Answer, finish reason and trace without timings (which differ run to run)."""
    trace = result.trace.as_dict()
    trace.pop("wall_s")
    trace["usage"].pop("latency_s")
    for call in trace["calls"]:
        call.pop("latency_s", None)
    return {"content": result.content, "finish_reason": result.finish_reason, "trace": trace}


async def streamed(pipeline: GraphPipeline, messages: list[Any], params: RunParams) -> RunResult:
    pieces: list[str] = []
    result = None
    async for event in pipeline.stream(messages, params):
        if isinstance(event, str):
            pieces.append(event)
        else:
            result = event
    assert result is not None
    assert "".join(pieces) == result.content, "the streamed text is the answer"
    return result


def graph_path(tmp_path: Path, name: str) -> Path:
    if name in SHAPES:
        path = tmp_path / f"{name}.yaml"
        path.write_text(SHAPES[name])
        return path
    return next(p for p in LOCAL_GRAPHS if p.stem == name)


@pytest.mark.parametrize("name", [*(p.stem for p in LOCAL_GRAPHS), *SHAPES])
async def test_engines_agree(
    name: str, tmp_path: Path, lookup: ReplayLookup, questions: list[tuple[list[Any], RunParams]]
) -> None:
    loaded = load_graph(graph_path(tmp_path, name), graphs_dir=REPO / "graphs", known_experts=list(AS))
    pipelines = {
        engine: GraphPipeline(loaded, lookup, list(AS), engine=engine, cache=NoCache()) for engine in ENGINES
    }
    if name in IN_PROCESS:
        params = questions[0][1]
        user = [{"role": "user", "content": params.metadata["question"]}]
        questions = [(user, dataclasses.replace(params, max_tokens=8))]
    for messages, params in questions:
        results = {}
        for engine, pipeline in pipelines.items():
            results[engine, "run"] = comparable(await pipeline.run(messages, params))
            results[engine, "stream"] = comparable(await streamed(pipeline, messages, params))
        first = results["langgraph", "run"]
        assert first["trace"]["calls"], name
        for key, other in results.items():
            assert other == first, f"{name}: {key} differs from langgraph/run"


async def test_the_shapes_take_every_path(
    tmp_path: Path, lookup: ReplayLookup, questions: list[tuple[list[Any], RunParams]]
) -> None:
    """The suite above is only worth something if loops run more than once and both branches of
    the conditional edge are taken."""
    rounds, branches = set(), set()
    for name, (messages, params) in itertools.product(
        ["loop-judge-moderator", "conditional-agree"], questions
    ):
        loaded = load_graph(graph_path(tmp_path, name), known_experts=list(AS))
        result = await GraphPipeline(loaded, lookup, list(AS), engine="direct").run(messages, params)
        if name == "loop-judge-moderator":
            rounds.add(len(result.trace.stops))
        else:
            branches.add(bool(result.trace.selections))
    assert max(rounds) > 1, rounds
    assert branches == {True, False}, branches
