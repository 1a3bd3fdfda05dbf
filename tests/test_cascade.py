"""The cascade node and the calibrated combination: a cascade stops at the first accepted answer,
falls through to the last expert, and every call it makes counts in the cost; the weighted vote
trusts an expert where the profile says it is right; budgets calibrated on dev hold there."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coe.aggregators.reliability import AnswerFeatures, answer_features, question_options
from coe.experts.base import ExpertClient
from coe.graph.compile import ENGINES, GraphPipeline
from coe.graph.loader import load_graph
from coe.graph.nodes.base import BuildContext
from coe.graph.nodes.cascade import CascadeNode, CascadeParams
from coe.graph.nodes.cascade_calibration import _spend, calibrate, simulate
from coe.pipeline import RunParams
from coe.routing.answers import train_answers
from coe.routing.profiles import Profile
from coe.routing.train import TrainData
from coe.types import Chunk, ExpertRequest, Usage
from routers.artifacts import write_artifact
from routers.embedding import Embedder
from routers.ranked import RankedRouter

QUESTION = [
    {
        "role": "user",
        "content": "Question:\nWhich is red?\nOptions:\nA. grass\nB. blood\nC. sky\nD. snow\n"
        "Answer: Let's think step by step.",
    }
]


class Says(ExpertClient):
    """Always answers ``text``, at 1e-6 USD per call; counts its calls."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.calls = 0

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        yield Chunk(self.text, Usage(20, 10, 1e-6), "stop")


class Lookup:
    def __init__(self, *clients: Says) -> None:
        self.clients = {c.name: c for c in clients}

    def client(self, name: str) -> ExpertClient:
        return self.clients[name]


def graph(tmp_path: Path, cascade: str) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(
        f"""
experts: [a, b, c]
entry: cascade
exit: answer
nodes:
  cascade: {cascade}
  answer: {{kind: answer}}
edges: [[cascade, answer]]
"""
    )
    return path


async def run(tmp_path: Path, cascade: str, *experts: Says) -> dict[str, Any]:
    loaded = load_graph(graph(tmp_path, cascade), known_experts=["a", "b", "c"])
    outcomes = []
    for engine in ENGINES:
        for client in experts:
            client.calls = 0
        result = await GraphPipeline(loaded, Lookup(*experts), ["a", "b", "c"], engine=engine).run(
            QUESTION, RunParams()
        )
        outcomes.append((result.content, result.trace.as_dict()["aggregate"], result.trace.usage.cost))
    assert outcomes[0] == outcomes[1], "both executors agree"
    content, events, cost = outcomes[0]
    return {"content": content, "event": events[-1], "cost": cost, "calls": [c.calls for c in experts]}


@pytest.mark.asyncio
async def test_stops_at_the_first_accepted_answer(tmp_path: Path) -> None:
    a = Says("a", "Blood is red. The answer is (B).")
    b, c = Says("b", "The answer is (C)."), Says("c", "The answer is (D).")
    out = await run(tmp_path, "{kind: cascade, accept: [{test: parsed}]}", a, b, c)
    assert out["calls"] == [1, 0, 0]
    assert out["content"] == a.text and out["event"]["method"] == "accepted"
    assert out["event"]["steps"] == [
        {"experts": ["a"], "leader": "B", "confidence": None, "tests": {"parsed": True}, "accepted": True}
    ]


@pytest.mark.asyncio
async def test_falls_through_to_the_last_expert(tmp_path: Path) -> None:
    a, b = Says("a", "Maybe B, maybe not."), Says("b", "I would say C")
    c = Says("c", "Hard to tell; D")
    out = await run(tmp_path, "{kind: cascade, accept: [{test: parsed}], combine: last}", a, b, c)
    assert out["calls"] == [1, 1, 1]
    assert out["content"] == c.text and out["event"]["method"] == "fell through (last)"
    assert [s["accepted"] for s in out["event"]["steps"]] == [False, False, False]


@pytest.mark.asyncio
async def test_every_call_counts_in_the_cost(tmp_path: Path) -> None:
    a, b = Says("a", "Maybe B."), Says("b", "Perhaps B")
    c = Says("c", "So the answer is (B).")
    out = await run(tmp_path, "{kind: cascade, accept: [{test: parsed}]}", a, b, c)
    assert out["calls"] == [1, 1, 1]  # two rejected answers, then an accepted one
    assert out["cost"] == pytest.approx(3e-6)
    assert out["content"] == c.text


@pytest.mark.asyncio
async def test_agree_takes_steps_and_needs_the_last_m_answers(tmp_path: Path) -> None:
    a, b = Says("a", "The answer is (B)."), Says("b", "The answer is (C).")
    c = Says("c", "The answer is (C).")
    out = await run(tmp_path, "{kind: cascade, steps: [2, 1], accept: [{test: agree, m: 2}]}", a, b, c)
    assert out["calls"] == [1, 1, 1]
    assert [s["experts"] for s in out["event"]["steps"]] == [["a", "b"], ["c"]]
    assert out["event"]["key"] == "C" and out["content"] == b.text  # the first answer naming C


def test_answer_features() -> None:
    options = question_options(QUESTION)
    assert options == ["grass", "blood", "sky", "snow"]
    strict = answer_features("It is blood, so the answer is (B).", options)
    assert (strict.letter, strict.form, strict.quotes, strict.valid) == ("B", 3, True, True)
    assert answer_features("Answer: C", options).form == 2
    fallback = answer_features("I pick J", options)
    assert (fallback.letter, fallback.form, fallback.valid) == ("J", 1, False)
    assert answer_features("no idea", options).letter is None


# --- the calibrated combination ------------------------------------------------------------------


def synthetic(n: int = 300) -> TrainData:
    """Two categories told apart by the embedding; expert `x` is always right in law and at chance
    elsewhere, `y` and `z` right 40% of the time everywhere. The gold letter is A."""
    rng = random.Random(0)
    experts = ["x", "y", "z"]
    cats = ["law" if i % 2 else "math" for i in range(n)]
    correct: dict[str, list[bool]] = {
        "x": [c == "law" or rng.random() < 0.1 for c in cats],
        "y": [rng.random() < 0.4 for _ in cats],
        "z": [rng.random() < 0.4 for _ in cats],
    }
    answers = {
        e: "".join(("A" if ok else rng.choice("BCDEFGHIJ")) + "3013" for ok in bits)
        for e, bits in correct.items()
    }
    profile = Profile(
        dataset="synthetic",
        source="test",
        experts=experts,
        question_ids=list(range(n)),
        categories=cats,
        skills=[""] * n,
        correct={e: "".join("1" if b else "0" for b in bits) for e, bits in correct.items()},
        cost_per_query={"x": 3e-4, "y": 1e-4, "z": 1e-4},
        answers=answers,
    )
    vectors = np.zeros((n, 384), dtype=np.float32)
    vectors[:, 0] = [1.0 if c == "law" else -1.0 for c in cats]
    vectors[:, 1] = np.random.default_rng(0).normal(0, 0.1, n)
    return TrainData(profile, vectors, Embedder(), experts)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta, arrays = train_answers(synthetic())
    path = tmp_path_factory.mktemp("answers") / "answers.json"
    write_artifact(path, meta, arrays, "(test: synthetic)")
    return path


def test_an_expert_always_right_in_a_category_dominates_there(artifact: Path) -> None:
    router = RankedRouter(RankedRouter.Params(artifact=str(artifact)), _context(artifact))
    law, math = (
        (np.array([1.0, 0.0]), np.array([0.0, 1.0]))
        if router.labels == ["law", "math"]
        else (
            np.array([0.0, 1.0]),
            np.array([1.0, 0.0]),
        )
    )
    x = AnswerFeatures("A", 3, False, True, 300)
    other = AnswerFeatures("B", 3, False, True, 300)
    answers = [("x", x), ("y", other), ("z", other)]
    in_law = router.reliability.tally(answers, law, 10)
    assert in_law.leader == "A" and in_law.posterior > 0.5
    assert router.reliability.tally(answers, math, 10).leader == "B"  # elsewhere x is a weak voter
    assert router.rank(law)[0] == "x" and router.rank(math)[0] != "x"


def test_confidence_is_calibrated_out_of_fold(artifact: Path) -> None:
    from routers.artifacts import read_artifact

    calib = read_artifact(artifact).meta["confidence"]["calibration"]
    assert calib["ece"] < 0.1 and sum(b["n"] for b in calib["bins"]) == calib["rows"]


def test_a_budget_of_calls_holds_on_dev(artifact: Path) -> None:
    params = CascadeParams.model_validate(
        {"artifact": str(artifact), "accept": [{"test": "confidence", "max_calls": 1.5}]}
    )
    node = CascadeNode("cascade", params, BuildContext("g", ["x", "y", "z"], Lookup(), artifact.parent))
    conf, calls, _ = simulate(node)
    assert calls.shape[0] == 300 and calls[:, -1].max() == 3
    assert node.threshold is not None and 0 < node.threshold < 1
    assert _spend(conf, calls, node.threshold) <= 1.5
    assert calibrate(node, 3.0, None) == 1.0  # the whole pool fits: never accept early


def _context(artifact: Path) -> Any:
    from routers.base import RouterContext

    return RouterContext(["x", "y", "z"], artifact.parent)
