"""Routing decisions on the slice: deterministic, within their limits, and as each method says."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from routers_data import MODELS

from coe.experts.base import ExpertClient
from coe.questions.datasets import Question
from coe.questions.prompts import build_messages
from coe.routing.data import routing_text
from coe.types import Chunk, ExpertRequest, Message, RouteDecision
from routers import ROUTERS, RouterContext, build_router
from routers.artifacts import read_artifact
from routers.base import Router
from routers.embedding import query_text

pytest_plugins = ["routers_support"]


def make(name: str, artifacts: dict[str, Path] | None = None, kind: str = "", **params: Any) -> Router:
    if kind:
        assert artifacts is not None
        params["artifact"] = str(artifacts[kind])
    return build_router(ROUTERS.get(name), params, RouterContext(MODELS, Path(".")))


def messages_of(questions: dict[int, Question], n: int = 60) -> list[list[Message]]:
    """5-shot-style prompts of the first ``n`` questions (shots of the same category, as in eval)."""
    chosen = sorted(questions.values(), key=lambda q: q.question_id)[:n]
    shots = [q for q in questions.values() if q not in chosen]
    return [build_messages(q, [s for s in shots if s.category == q.category][:5]) for q in chosen]


def decide(router: Router, prompts: list[list[Message]]) -> list[RouteDecision]:
    async def run() -> list[RouteDecision]:
        return [await router.route(m) for m in prompts]

    return asyncio.run(run())


def test_query_text_is_the_final_question_only(questions: dict[int, Question]) -> None:
    prompts = messages_of(questions, 3)
    q = sorted(questions.values(), key=lambda q: q.question_id)[0]
    text = query_text(prompts[0])
    assert text == routing_text(q)
    assert text.startswith(q.question.strip()[:40]) and "Answer:" not in text
    assert q.category not in text.split("\n")[0] or q.category in q.question
    assert query_text([{"role": "user", "content": "  hello  "}]) == "hello"


def test_random_is_seeded_per_query(questions: dict[int, Question]) -> None:
    prompts = messages_of(questions)
    first = decide(make("random", seed=1), prompts)
    assert first == decide(make("random", seed=1), list(prompts))
    assert [d.experts for d in first] != [d.experts for d in decide(make("random", seed=2), prompts)]
    assert all(len(d.experts) == 1 and d.experts[0] in MODELS for d in first)
    assert len(Counter(d.experts[0] for d in first)) == 3


def test_coe_maps_categories_and_falls_back(
    embed_cache: Path, artifacts: dict[str, Path], questions: dict[int, Question]
) -> None:
    prompts = messages_of(questions)
    confident = decide(make("coe", artifacts, "category", threshold=0.0), prompts)
    assert all(d.category is not None and len(d.experts) == 1 for d in confident)
    router = make("coe", artifacts, "category", threshold=0.0)
    assert all(d.experts[0] == router.mapping[d.category] for d in confident)  # type: ignore[attr-defined,index]
    # below the threshold the generalist (best overall on the slice) answers, with no category
    unsure = decide(make("coe", artifacts, "category", threshold=1.0), prompts)
    assert {d.experts for d in unsure} == {(MODELS[0],)} and all(d.category is None for d in unsure)
    cut = float(np.median([d.confidence for d in confident]))
    mixed = decide(make("coe", artifacts, "category", threshold=cut, fallback=MODELS[2]), prompts)
    for before, after in zip(confident, mixed, strict=True):
        assert after.experts == (before.experts if (before.confidence or 0) >= cut else (MODELS[2],))


def test_coe_budget(embed_cache: Path, artifacts: dict[str, Path], questions: dict[int, Question]) -> None:
    router = make("coe", artifacts, "category")
    costs = router.artifact.meta["cost_per_query"]  # type: ignore[attr-defined]
    cheapest = min(costs, key=costs.get)
    budget = make("coe", artifacts, "category", budget=costs[cheapest] * 1.0001)
    assert {d.experts[0] for d in decide(budget, messages_of(questions, 20))} == {cheapest}


def test_bench_coe(embed_cache: Path, artifacts: dict[str, Path], questions: dict[int, Question]) -> None:
    prompts = messages_of(questions)
    subject = decide(make("bench-coe-subject", artifacts, "category"), prompts)
    coe = decide(make("coe", artifacts, "category"), prompts)
    assert [d.experts for d in subject] == [d.experts for d in coe]
    query = decide(make("bench-coe-query", artifacts, "correctness"), prompts)
    assert all(len(d.experts) == 1 and 0 < (d.confidence or 0) < 1 for d in query)
    # a large cost weight sends everything to the cheapest expert
    router = make("bench-coe-query", artifacts, "correctness", lam=1000.0)
    costs = router.artifact.meta["cost_per_query"]  # type: ignore[attr-defined]
    assert {d.experts[0] for d in decide(router, prompts)} == {min(costs, key=costs.get)}


def test_cost_threshold_calibration(
    embed_cache: Path, artifacts: dict[str, Path], questions: dict[int, Question]
) -> None:
    prompts = messages_of(questions, 210)
    for share in (0.2, 0.5):
        router = make("cost-threshold", artifacts, "correctness", strong_share=share, weak=[MODELS[2]])
        assert router.strong == MODELS[0]  # type: ignore[attr-defined]
        calls = Counter(d.experts[0] for d in decide(router, prompts))
        assert set(calls) <= {MODELS[0], MODELS[2]}
        assert calls[MODELS[0]] / 210 == pytest.approx(share, abs=0.1)
    never = make("cost-threshold", artifacts, "correctness", strong_share=0.0)
    assert MODELS[0] not in {d.experts[0] for d in decide(never, prompts[:30])}
    with pytest.raises(ValueError, match="not both"):
        make("cost-threshold", artifacts, "correctness", strong_share=0.5, threshold=0.1)


def test_symbolic_moe(embed_cache: Path, artifacts: dict[str, Path], questions: dict[int, Question]) -> None:
    prompts = messages_of(questions)
    first = decide(make("symbolic-moe", artifacts, "skills", seed=0), prompts)
    assert first == decide(make("symbolic-moe", artifacts, "skills", seed=0), prompts)
    assert first != decide(make("symbolic-moe", artifacts, "skills", seed=7), prompts)
    # the paper's draws: a model drawn twice is called twice, in draw order
    repeated = 0
    for d in first:
        assert len(d.experts) == 3 and not d.weights and len(d.skills) == 3
        counts = Counter(d.experts)
        assert d.primary == max(counts, key=lambda e: (counts[e], -d.experts.index(e)))
        repeated += len(counts) < 3
    assert repeated > 0  # some draws repeat
    # over replayed outputs (one sample per question): one call, the votes as weights
    weighted = decide(make("symbolic-moe", artifacts, "skills", seed=0, repeats="weight"), prompts)
    for d, drawn in zip(weighted, first, strict=True):
        assert 1 <= len(d.experts) <= 3 and len(set(d.experts)) == len(d.experts)
        assert d.weights == {e: float(n) for e, n in Counter(drawn.experts).items()}
        assert list(d.weights.values()) == sorted(d.weights.values(), reverse=True)
    top = decide(make("symbolic-moe", artifacts, "skills", draw="top"), prompts)
    assert all(len(d.experts) == 3 and set(d.weights.values()) == {1.0} for d in top)


class ScriptedAnnotator(ExpertClient):
    """An expert client that always lists the same skills (stands in for an LLM annotator)."""

    name = "annotator"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls = 0

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        self.calls += 1
        yield Chunk(self.answers[(self.calls - 1) % len(self.answers)])

    def client(self, name: str) -> ScriptedAnnotator:
        return self


def test_symbolic_moe_llm_annotator(
    embed_cache: Path,
    artifacts: dict[str, Path],
    questions: dict[int, Question],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from routers import symbolic_moe

    skills: list[str] = list(read_artifact(artifacts["skills"]).meta["skills"])
    target = next(s for s in skills[len(skills) // 2 :] if len(s) <= 20)  # the paper drops longer keywords
    extras = ["cooking", "gardening", "knitting", "sailing", "chess"]
    annotator = ScriptedAnnotator(
        [
            f"{target}, {extras[0]}",
            f"{target}; {extras[1]}",
            f"1. {target}\n2. {extras[2]}",
            f"- {extras[3]}\n- {target}",
            f"{extras[4]}, {target}.",
        ]
    )
    params = {"artifact": str(artifacts["skills"]), "annotator": "annotator"}
    router = build_router(ROUTERS.get("symbolic-moe"), params, RouterContext(MODELS, Path("."), annotator))
    skill_index = {s: i for i, s in enumerate(skills)}
    # keyword embeddings come from the real model; here: the name embeddings of the artifact
    names = read_artifact(artifacts["skills"]).array("N")

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([names[skill_index[t]] if t in skill_index else -names[0] for t in texts])

    monkeypatch.setattr(router.embedder, "embed", embed)  # type: ignore[attr-defined]
    decision = decide(router, messages_of(questions, 1))[0]
    assert annotator.calls == 5
    assert decision.skills == (target,)  # named 5 times; the others once each
    assert symbolic_moe.keywords("1. Algebra\n2. number theory.") == ["algebra", "number theory"]
    assert symbolic_moe.keywords("Keywords: optics, waves") == ["optics", "waves"]
    # the paper's filter: at most 20 characters, named at least twice over all the answers
    answers = ["optics, a very long keyword indeed", "optics; waves", "waves, a very long keyword indeed"]
    assert symbolic_moe.kept_keywords(answers) == ["optics", "waves"]
