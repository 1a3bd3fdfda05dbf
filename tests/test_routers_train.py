"""Training on the committed slice: each artifact kind, its files, and `coe train` from a graph."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from routers_data import MODELS, SLICE, profile_args, slice_graph

from coe.cli import main
from coe.questions.datasets import Question
from coe.questions.prompts import build_messages
from coe.routing.data import routing_text
from coe.routing.profiles import Profile
from coe.routing.train import TrainData, category_c, skill_name, train
from coe.types import RouteDecision
from routers import ROUTERS, RouterContext, build_router
from routers.artifacts import read_artifact, write_artifact
from routers.static_embedding import STATIC_NAME, StaticEmbedder

pytest_plugins = ["routers_support"]


def test_category(data: TrainData) -> None:
    meta, arrays = train("category", data)
    assert len(meta["labels"]) == 14 and arrays["W"].shape == (14, 384) and arrays["b"].shape == (14,)
    assert set(meta["per_category"]["law"]) == {"n", *MODELS}
    assert meta["embedding"] == {"model": "all-MiniLM-L6-v2", "max_tokens": 256}
    # in-sample, the classifier should know most of its own training questions
    logits = data.vectors @ arrays["W"].T + arrays["b"]
    predicted = np.array(meta["labels"])[logits.argmax(axis=1)]
    assert (predicted == np.array(data.profile.categories)).mean() > 0.8


def test_correctness(data: TrainData) -> None:
    meta, arrays = train("correctness", data)
    assert arrays["W"].shape == (3, 384) and arrays["calib"].shape == (210, 3)
    assert float(arrays["calib"].min()) > 0 and float(arrays["calib"].max()) < 1
    assert meta["overall"][MODELS[0]] == round(101 / 210, 6)


def test_skills(data: TrainData, profile: Profile) -> None:
    meta, arrays = train("skills", data)
    skills = meta["skills"]
    assert skills == sorted({skill_name(s) for s in profile.skills})
    assert skill_name("ori_mmlu-high_school_physics") == "high school physics"
    scores = arrays["S"]
    assert scores.shape == (len(skills), 3)
    # +1/−1 per question: the scores of an expert add up to right − wrong
    assert int(scores[:, 0].sum()) == 2 * 101 - 210
    assert np.allclose(np.linalg.norm(arrays["P"], axis=1), 1, atol=1e-5)
    assert arrays["N"].shape == (len(skills), 384)


def test_artifact_files(data: TrainData, tmp_path: Path) -> None:
    meta, arrays = train("category", data)
    written = write_artifact(tmp_path / "a.json", meta, arrays, "coe train --graph x")
    assert [p.name for p in written] == ["a.json", "a.npz", "a.command"]
    assert "coe train --graph x" in (tmp_path / "a.command").read_text()
    loaded = read_artifact(tmp_path / "a.json")
    assert loaded.kind == "category" and loaded.meta["command"] == "coe train --graph x"
    assert np.array_equal(loaded.array("W"), arrays["W"])


def test_cli_trains_the_graphs_artifact(embed_cache: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    assert main(profile_args(profile)) == 0
    graph = slice_graph("bench-coe-query", tmp_path, tmp_path / "router.json")
    code = main(
        [
            "train",
            "--graph",
            str(graph),
            "--profile",
            str(profile),
            "--data-path",
            str(SLICE / "test_slice.jsonl"),
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "router.json").read_text())
    assert meta["kind"] == "correctness" and meta["experts"] == MODELS
    assert (tmp_path / "router.npz").is_file() and (tmp_path / "router.command").is_file()
    # fixed routers learn nothing
    single = slice_graph("single-best", tmp_path)
    assert main(["train", "--graph", str(single), "--profile", str(profile), "--data-path", str(SLICE)]) == 2


def test_static_embedder_trains_and_routes(
    data: TrainData, questions: dict[int, Question], tmp_path: Path
) -> None:
    """`coe train --embedder static`: the artifact names the static table, its classifier has the
    static table's C, and the router built on it embeds with the table (no transformer)."""
    from sklearn.linear_model import LogisticRegression

    static = StaticEmbedder()
    vectors = static.embed([routing_text(questions[q]) for q in data.profile.question_ids])
    meta, arrays = train("category", TrainData(data.profile, vectors, static, MODELS))
    assert meta["embedding"] == {"model": STATIC_NAME, "max_tokens": 512}
    assert category_c(static) == 16.0 and category_c(data.embedder) == 4.0
    labels = np.array(data.profile.categories)
    expected = LogisticRegression(C=16.0, max_iter=2000, random_state=0).fit(vectors, labels)
    assert np.allclose(arrays["W"], expected.coef_, atol=1e-4)
    path = tmp_path / "static.json"
    write_artifact(path, meta, arrays, "(test: static category)")

    context = RouterContext(MODELS, tmp_path)
    router = build_router(ROUTERS.get("bench-coe-subject"), {"artifact": str(path)}, context)
    chosen = sorted(questions.values(), key=lambda q: q.question_id)[:20]
    prompts = [build_messages(q, ()) for q in chosen]

    async def route_all() -> list[RouteDecision]:
        return [await router.route(m) for m in prompts]

    decisions = asyncio.run(route_all())
    logits = vectors[[data.profile.question_ids.index(q.question_id) for q in chosen]] @ arrays["W"].T
    predicted = np.array(meta["labels"])[(logits + arrays["b"]).argmax(axis=1)]
    assert [d.category for d in decisions] == list(predicted)
    assert [d.experts[0] for d in decisions] == [router.mapping[c] for c in predicted]  # type: ignore[attr-defined]
    assert isinstance(router.embedder, StaticEmbedder)  # type: ignore[attr-defined]
