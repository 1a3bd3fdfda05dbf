"""Profiles: built from the slice's replay files and from eval results; summaries and subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from routers_data import MODELS, OUTPUTS, SLICE, profile_args

from coe.cli import main
from coe.questions.datasets import Question
from coe.routing.profiles import Profile, build_from_results, read_profile

pytest_plugins = ["routers_support"]


def test_correctness_matches_the_reference_tool(profile: Profile) -> None:
    expected = json.loads((SLICE / "expected_accuracy.json").read_text())["models"]
    assert len(profile.question_ids) == 210
    for name, row in expected.items():
        assert profile.correct[name].count("1") == row["correct"]
        assert round(profile.overall()[name], 4) == round(row["correct"] / 210, 4)


def test_summaries(profile: Profile) -> None:
    per_category = profile.per_category()
    assert len(per_category) == 14 and all(row["n"] == 15 for row in per_category.values())
    skills = profile.per_skill()
    for name in MODELS:
        right = profile.correct[name].count("1")
        # +1 per right answer, −1 per wrong one, over every skill
        assert sum(row[name] for row in skills.values()) == 2 * right - 210
    assert sum(row["n"] for row in skills.values()) == 210
    assert all(0 < cost < 0.01 for cost in profile.cost_per_query.values())
    assert profile.summarise().summary["oracle"] >= max(profile.overall().values())


def test_subset_and_roundtrip(profile: Profile, tmp_path: Path) -> None:
    ids = profile.question_ids[::2]
    half = profile.subset(ids)
    assert half.question_ids == ids
    assert half.matrix().tolist() == profile.matrix()[::2].tolist()
    half.write(tmp_path / "p.json")
    again = read_profile(tmp_path / "p.json")
    assert again.correct == half.correct and again.summary["n"] == len(ids)


def test_from_eval_results(profile: Profile, questions: dict[int, Question], tmp_path: Path) -> None:
    lines = []
    for i, qid in enumerate(profile.question_ids):
        q = questions[qid]
        wrong = "A" if q.answer != "A" else "B"
        lines.append(
            {
                "question_id": qid,
                "category": q.category,
                "answer": q.answer,
                "expert_predictions": {"x": q.answer if i % 2 == 0 else wrong, "y": None},
                "expert_costs": {"x": 0.002, "y": 0.001},
            }
        )
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    built = build_from_results([tmp_path], list(questions.values()))
    assert built.experts == ["x", "y"]
    assert built.overall() == {"x": 105 / 210, "y": 0.0}
    assert built.cost_per_query == pytest.approx({"x": 0.002, "y": 0.001})
    assert built.skills[0] == questions[built.question_ids[0]].src


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    code = main(profile_args(out))
    assert code == 0
    assert read_profile(out).summary["n"] == 210
    assert main(["profile", "--replay-dir", str(OUTPUTS), "--out", str(out)]) == 2
