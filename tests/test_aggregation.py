"""Mixture-of-Agents, SMoA and Symbolic-MoE's aggregator on the local llama.cpp experts: layers and
rounds as parallel branches, roles per call and per-role accounting, SMoA's moderator (stop early,
run to the bound, fall back when its reply is not JSON), role descriptions cached in Redis and
under the state dir, a twice-drawn expert called twice, the aggregation test on real recorded
responses, the paper's LLM keyword skills, and `coe eval` of each graph.

The experts run once for the module; `coe eval`, the aggregation test and `coe train` reach them
through an experts file that points at their running servers (so nothing is launched twice).
SMoA's stop/bound/fallback paths need a moderator that says exactly one thing: an expert of our
own interface that replies with a fixed text, over replayed real answers (tests/data slice).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from conftest import MODEL_CACHE, REPO, coe, write_settings
from test_graph_engines import AS, SLICE, ReplayLookup

from coe.config import Settings, load_experts
from coe.eval.runner import EvalOptions, run_eval
from coe.experts.base import ExpertClient
from coe.experts.pool import ExpertPool
from coe.graph.cache import FileCache, RedisCache, TextCache
from coe.graph.compile import GraphPipeline
from coe.graph.loader import load_graph
from coe.graph.roles import parse_roles
from coe.pipeline import RunParams, RunResult
from coe.questions.datasets import load_mmlu_pro
from coe.questions.prompts import build_messages
from coe.routing.aggtest import aggregation_test, recorded_responses, synthetic_candidates
from coe.types import Chunk, ExpertRequest, Usage

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = [{"role": "user", "content": "What is 2 + 3? Reply: the answer is (NUMBER)."}]
PARAMS = RunParams(max_tokens=12)
ROLE_KEYS = ("prompt_tokens", "completion_tokens", "cost")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ExpertPool]:
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("aggregation"), models_dir=MODEL_CACHE, default_max_tokens=16
    )
    pool = ExpertPool(load_experts(REPO / "config" / "experts.yaml"), settings)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


@pytest.fixture(scope="module")
def attached(pool: ExpertPool, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose experts are the module's running servers (``endpoint``), state in a temp dir."""
    folder = tmp_path_factory.mktemp("attached")
    experts = yaml.safe_load((REPO / "config" / "experts.yaml").read_text())
    for entry in experts["experts"]:
        entry["endpoint"] = pool.launchers[entry["name"]].base_url
    (folder / "experts.yaml").write_text(yaml.safe_dump(experts))
    return Settings.load(write_settings(folder, experts_file=folder / "experts.yaml", default_max_tokens=16))


def shipped(
    name: str, lookup: Any, pool: list[str], cache: TextCache | None = None, engine: str = "langgraph"
) -> GraphPipeline:
    loaded = load_graph(
        REPO / "graphs" / f"{name}.yaml", graphs_dir=REPO / "graphs", known_experts=list(pool)
    )
    return GraphPipeline(loaded, lookup, pool, engine=engine, cache=cache)


def per_role(result: RunResult) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for call in result.trace.calls:
        out.setdefault(call["role"], Counter()).update({k: call[k] for k in ROLE_KEYS} | {"calls": 1})
    return out


def assert_roles_add_up(result: RunResult) -> None:
    roles = per_role(result)
    usage = result.trace.usage
    assert sum(r["calls"] for r in roles.values()) == len(result.trace.calls)
    assert sum(r["prompt_tokens"] for r in roles.values()) == usage.prompt_tokens
    assert sum(r["completion_tokens"] for r in roles.values()) == usage.completion_tokens
    assert sum(r["cost"] for r in roles.values()) == pytest.approx(usage.cost, rel=1e-6)


# --- MoA ------------------------------------------------------------------------------------


async def test_moa_two_proposer_layers_then_an_aggregator(pool: ExpertPool) -> None:
    """(The executors agree on every graph: tests/test_graph_engines.py; here the serving one.)"""
    result = await shipped("moa", pool, pool.names).run(QUESTION, PARAMS)
    calls = result.trace.calls
    assert [c["role"] for c in calls] == ["propose"] * 6 + ["aggregate"]
    first, second, final = calls[:3], calls[3:6], calls[6]
    assert [c["expert"] for c in first] == [c["expert"] for c in second] == pool.names
    assert {c.get("prompt") for c in first} == {None}
    assert {c["prompt"] for c in second} == {"moa.references"} == {final["prompt"]}
    # layer 2 read layer 1's answers in its system message: a longer prompt than layer 1's
    for one, two in zip(first, second, strict=True):
        assert two["prompt_tokens"] > one["prompt_tokens"] + 5
    assert final["expert"] == "smollm2" and result.content == final["answer"]
    assert [s["round"] for s in result.trace.stops] == [1, 2]
    assert_roles_add_up(result)


# --- SMoA: the moderator ----------------------------------------------------------------------


class Says(ExpertClient):
    """An expert of our own interface that always replies ``text`` (a moderator with a fixed mind)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        yield Chunk(self.text, Usage(30, 10, 1e-6), "stop")


class WithModerator:
    """Replayed answers under the local experts' names, and a moderator saying ``text``."""

    def __init__(self, replay: ReplayLookup, text: str) -> None:
        self.replay = replay
        self.moderator = Says("moderator", text)

    def client(self, name: str) -> ExpertClient:
        return self.moderator if name == "moderator" else self.replay.client(name)


def smoa_with_moderator(tmp_path: Path) -> Path:
    """The shipped SMoA graph with its moderator and aggregator swapped for ``moderator``."""
    text = (REPO / "graphs" / "smoa.yaml").read_text()
    text = text.replace("judge: smollm2", "judge: moderator").replace(
        "{expert: smollm2, temp", "{expert: moderator, temp"
    )
    path = tmp_path / "smoa.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def replay() -> ReplayLookup:
    return ReplayLookup()


@pytest.fixture(scope="module")
def slice_question() -> tuple[list[Any], RunParams]:
    question = load_mmlu_pro(SLICE / "test_slice.jsonl")[0]
    return build_messages(question, (), "cot0"), RunParams(max_tokens=64, metadata=question.metadata())


@pytest.mark.parametrize(
    ("verdict", "rounds", "fallback"),
    [
        ('{"reasoning": "1 and 3 agree", "selected": [1, 3], "stop": true}', 1, False),
        ('{"reasoning": "they differ", "selected": [0, 2], "stop": false}', 2, False),
        ("The second answer looks best to me.", 2, True),  # not JSON: seeded picks, go on
        ('{"selected": [1, 7], "stop": true}', 1, True),  # out of range: seeded picks; stop stands
    ],
)
@pytest.mark.parametrize("engine", ["langgraph", "direct"])
async def test_smoa_moderator_selects_and_stops(
    tmp_path: Path,
    replay: ReplayLookup,
    slice_question: tuple[list[Any], RunParams],
    verdict: str,
    rounds: int,
    fallback: bool,
    engine: str,
) -> None:
    lookup = WithModerator(replay, verdict)
    loaded = load_graph(smoa_with_moderator(tmp_path), known_experts=[*AS, "moderator"])
    runs = []
    for _ in range(2):
        pipeline = GraphPipeline(loaded, lookup, list(AS), engine=engine)
        runs.append(await pipeline.run(*slice_question))
    result = runs[0]
    trace = result.trace.as_dict()
    assert trace["selections"] == runs[1].trace.as_dict()["selections"], "the fallback is seeded"
    assert [s["round"] for s in trace["stops"]] == list(range(1, rounds + 1))
    proposals = [c for c in trace["calls"] if c["role"] == "propose"]
    assert len(proposals) == 4 * rounds
    assert [c["expert"] for c in proposals[:4]] == ["smollm2", "smollm2-warm", "gemma3-270m", "smollm2"]
    for selection in trace["selections"]:
        assert len(selection["indices"]) == 2 and selection["fallback"] is fallback
        if fallback:
            assert "seeded random choice" in selection["reason"]
    if not fallback:
        assert trace["selections"][0]["indices"] == json.loads(verdict)["selected"]
    assert trace["stops"][-1]["reason"] == (
        "condition judge-stop holds" if rounds == 1 else "reached max_rounds=2"
    )
    # later rounds see only the selected answers; the aggregator synthesises the last selection
    kept = trace["selections"][-1]["indices"]
    last = proposals[-4:]
    final = [c for c in trace["calls"] if c["role"] == "aggregate"]
    assert len(final) == 1 and final[0]["prompt"] == "moa.references"
    assert trace["aggregate"][0]["aggregator"] == "moa" and len(kept) == 2 and len(last) == 4
    assert_roles_add_up(result)


# --- SMoA: role descriptions, written once ---------------------------------------------------

ROLES_GRAPH = """
experts: [smollm2, gemma3-270m]
entry: propose
exit: answer
nodes:
  propose:
    kind: propose
    count: 2
    generate_roles: {expert: smollm2, max_tokens: 160, temperature: 0}
  answer: {kind: answer}
edges: [[propose, answer]]
"""


async def test_role_descriptions_are_generated_once_then_cached(
    pool: ExpertPool, redis_server: str, tmp_path: Path
) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text(ROLES_GRAPH)
    loaded = load_graph(path, known_experts=pool.names)
    task = RunParams(max_tokens=8, metadata={"task": "MMLU-Pro multiple-choice questions about physics"})
    redis = RedisCache(redis_server, prefix=f"coe:test:{tmp_path.name}:")
    try:
        for cache in (redis, FileCache(tmp_path / "state" / "cache")):
            first = await GraphPipeline(loaded, pool, pool.names, cache=cache).run(QUESTION, task)
            written = [c for c in first.trace.calls if c["role"] == "roles"]
            assert len(written) == 1 and written[0]["prompt"] == "roles.generate"
            personas = [c["persona"] for c in first.trace.calls if c["role"] == "propose"]
            roles = parse_roles(written[0]["answer"], 2)  # what the tiny model wrote: 1 or 2 roles
            assert roles, written[0]["answer"]
            assert personas == [f"role {i % len(roles) + 1}" for i in range(2)], "assigned in turn"
            # a new pipeline (another request, or a restarted service) finds them in the cache
            again = await GraphPipeline(loaded, pool, pool.names, cache=cache).run(QUESTION, task)
            assert [c["role"] for c in again.trace.calls] == ["propose", "propose"]
            assert [c["persona"] for c in again.trace.calls] == personas
            # another task gets its own
            other = await GraphPipeline(loaded, pool, pool.names, cache=cache).run(QUESTION, PARAMS)
            assert other.trace.calls[0]["role"] == "roles"
    finally:
        await redis.aclose()
    assert list((tmp_path / "state" / "cache").glob("*.json"))


# --- Symbolic-MoE -----------------------------------------------------------------------------


async def test_symbolic_moe_calls_a_twice_drawn_expert_twice(pool: ExpertPool) -> None:
    pipeline = shipped("symbolic-moe", pool, pool.names)
    result = await pipeline.run(QUESTION, RunParams(max_tokens=10))
    drawn = result.trace.route[0]["experts"]
    assert len(drawn) == 3 and len(set(drawn)) < 3, "this question's seeded draws repeat an expert"
    answers = [c for c in result.trace.calls if c["role"] == "answer"]
    assert [c["expert"] for c in answers] == drawn, "one call per draw, in draw order"
    final = [c for c in result.trace.calls if c["role"] == "aggregate"]
    assert len(final) == 1 and final[0]["prompt"] == "synthesize" and result.content == final[0]["answer"]
    assert_roles_add_up(result)


async def test_aggregation_test_reads_real_recorded_responses(attached: Settings) -> None:
    questions = load_mmlu_pro(SLICE / "test_slice.jsonl")
    responses = recorded_responses(SLICE / "outputs", [q.question_id for q in questions])
    cases = [(q, c) for q in questions if (c := synthetic_candidates(q, responses[q.question_id]))]
    question, candidates = cases[0]
    assert len({c.expert for c in candidates}) == 3
    unchanged = [c for c in candidates if c.content == responses[question.question_id][c.expert]]
    assert len(unchanged) == 3, "the candidates are the recorded responses, unchanged"
    assert synthetic_candidates(question, responses[question.question_id]) == candidates, "seeded"
    result = await aggregation_test(
        ["smollm2", "gemma3-270m"], [q for q, _ in cases[:2]], responses, attached, max_tokens=8
    )
    assert result["questions"] == 2 and set(result["scores"]) == {"smollm2", "gemma3-270m"}
    assert result["chosen"] in result["scores"]


async def test_train_skills_from_llm_keywords(attached: Settings, tmp_path: Path) -> None:
    """`coe train --skills llm`: the paper's keyword annotator labels the profiling questions."""
    from coe.routing.profiles import read_profile

    profile = read_profile(REPO / "config" / "profiles" / "live.json")
    small = profile.subset(profile.question_ids[:3])
    small.write(tmp_path / "profile.json")
    out = tmp_path / "skills.json"
    result = await asyncio.to_thread(
        coe,
        *("train", "--graph", "symbolic-moe", "--profile", str(tmp_path / "profile.json")),
        *("--data-path", str(REPO / "config" / "profiles" / "live-dev-slice.jsonl")),
        *("--skills", "llm", "--annotator", "smollm2", "--annotator-max-tokens", "24"),
        *("--out", str(out), "--config", str(attached.config_file)),
    )
    if "the annotator kept no keyword" in result.stderr:
        pytest.xfail("smollm2 repeated no keyword on these 3 questions (a tiny model)")
    assert result.returncode == 0, result.stderr
    assert "keywords kept for" in result.stdout
    meta = json.loads(out.read_text())
    assert meta["skills_source"].startswith("llm keywords from smollm2")
    kept = {k for kws in meta["keywords"].values() for k in kws}
    assert kept and set(meta["skills"]) == kept and all(len(k) <= 20 for k in kept)


# --- coe eval: accounting per role --------------------------------------------------------------


def quicker(graph: str, tmp_path: Path) -> str:
    """The shipped graph; SMoA's with shorter role descriptions and moderator replies, written at
    temperature 0 (the tiny models' speed, and one role call however the draws fall)."""
    if graph != "smoa":
        return graph
    spec = yaml.safe_load((REPO / "graphs" / "smoa.yaml").read_text())
    spec["nodes"]["propose"]["generate_roles"].update(max_tokens=96, temperature=0)
    spec["nodes"]["moderate"]["max_tokens"] = 48
    path = tmp_path / "smoa.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("graph", ["moa", "smoa", "symbolic-moe"])
async def test_eval_reports_each_role(graph: str, attached: Settings, tmp_path: Path) -> None:
    options = EvalOptions(
        graph=quicker(graph, tmp_path),
        dataset="mmlu-pro",
        out=tmp_path / "out",
        data_path=str(SLICE / "test_slice.jsonl"),
        limit=2,
        prompt="cot0",
        max_tokens=12,
        progress=False,
    )
    summary = await run_eval(options, attached)
    assert summary["n"] == 2 and summary["errors"] == 0
    roles = summary["roles"]
    expected = {"moa": {"propose", "aggregate"}, "smoa": {"propose", "judge", "aggregate"}}
    assert set(roles) >= expected.get(graph, {"answer", "aggregate"})
    if graph == "smoa":
        assert roles["roles"]["calls"] == 1, "one role call for the task, then cached"
    assert sum(r["calls"] for r in roles.values()) == sum(summary["expert_calls"].values())
    assert sum(r["prompt_tokens"] for r in roles.values()) == summary["tokens"]["prompt"]
    assert sum(r["completion_tokens"] for r in roles.values()) == summary["tokens"]["completion"]
    assert sum(r["cost"] for r in roles.values()) == pytest.approx(summary["cost"], abs=1e-7)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Calls, tokens and cost per role" in report
    for role in roles:
        assert f"| {role} |" in report
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert all(row["responses"] for row in rows), "live experts' own answers are kept"


async def test_graph_show_draws_smoa_loop_and_branches(capsys: pytest.CaptureFixture[str]) -> None:
    from coe.cli import main

    assert main(["graph", "show", "smoa"]) == 0
    drawn = capsys.readouterr().out
    for edge in (
        "propose -.-> propose\\2ebranch",  # one branch per proposer (a Send each)
        "propose\\2ebranch --> propose\\2ejoin",  # the join waits for every branch
        "propose\\2ejoin --> moderate",
        "rounds -. &nbsp;next&nbsp; .-> propose",  # the loop
        "rounds -. &nbsp;done&nbsp; .-> aggregate",
    ):
        assert edge in drawn, edge


async def test_role_descriptions_parse_from_json_text_or_a_cut_reply() -> None:
    assert parse_roles('{"roles": ["You are a careful chemist.", "short", "You are a doctor"]}', 4) == [
        "You are a careful chemist.",
        "You are a doctor",
    ]
    cut = '{"roles": ["You are a patient physics teacher.", "You are a sharp tax lawyer.", "You are a'
    assert parse_roles(cut, 4) == ["You are a patient physics teacher.", "You are a sharp tax lawyer."]
    text = "[Generated Role Description 1]\nYou are a data analyst.\n\nThe answer is (B)."
    assert parse_roles(text, 4) == ["You are a data analyst."]
    assert parse_roles("Let's think step by step. The answer is (C).", 4) == []
