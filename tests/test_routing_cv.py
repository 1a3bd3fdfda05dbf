"""Cross-validation (``coe.routing.cv``) and the synthetic aggregation test's cases
(``coe.routing.aggtest``), which the README's numbers rest on: folds by ``question_id % k``,
artifacts trained without the fold, every node reading the route's artifact pointed at the fold's,
totals that add up; one right and two wrong recorded answers per question, reproducibly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from routers_data import MODELS, OUTPUTS, SLICE, slice_graph

from coe.config import Settings
from coe.questions.datasets import Question
from coe.questions.extract import extract_choice
from coe.routing.aggtest import recorded_responses, synthetic_candidates
from coe.routing.cv import CVOptions, _fold_graph, cross_validate
from coe.routing.data import read_graph, route_node
from coe.routing.train import TrainData

pytest_plugins = ["routers_support"]


def test_fold_graph_points_every_reader_at_the_fold_artifact(tmp_path: Path) -> None:
    graph = slice_graph("frugal", tmp_path, tmp_path / "answers.json")
    loaded = read_graph(graph, tmp_path)
    fold = tmp_path / "fold0"
    fold.mkdir()
    copy = yaml.safe_load(
        _fold_graph(loaded, route_node(loaded).node, Path("fold0/artifact.json"), fold).read_text()
    )
    expected = str((Path("fold0") / "artifact.json").resolve())
    assert copy["nodes"]["route"]["params"]["artifact"] == expected
    assert copy["nodes"]["cascade"]["artifact"] == expected


def test_cross_validation_on_the_slice(
    embed_cache: Path, data: TrainData, questions: dict[int, Question], tmp_path: Path
) -> None:
    graph = slice_graph("bench-coe-subject", tmp_path, tmp_path / "unused.json")
    loaded = read_graph(graph, tmp_path)
    options = CVOptions(
        folds=5, out=tmp_path / "cv", replay_dir=OUTPUTS, shots_path=SLICE / "validation.jsonl"
    )
    result = asyncio.run(cross_validate(loaded, data, questions, options, Settings.load()))
    assert result["n"] == 210 and [f["fold"] for f in result["folds"]] == [0, 1, 2, 3, 4]
    seen: list[int] = []
    correct = calls = 0
    for fold in range(5):
        text = (tmp_path / "cv" / f"fold{fold}" / "eval" / "results.jsonl").read_text()
        rows = [json.loads(line) for line in text.splitlines()]
        assert {r["question_id"] % 5 for r in rows} == {fold}, "a fold holds its residue class only"
        seen += [r["question_id"] for r in rows]
        correct += sum(r["correct"] for r in rows)
        calls += sum(len(r["experts"]) for r in rows)
        artifact = json.loads((tmp_path / "cv" / f"fold{fold}" / "artifact.json").read_text())
        assert artifact["trained_on"]["questions"] == 210 - len(rows), "trained without the fold"
    assert sorted(seen) == sorted(questions)
    assert result["accuracy"] == round(correct / 210, 4) and result["calls_per_question"] == round(
        calls / 210, 3
    )
    matrix = data.profile.matrix(MODELS)
    assert result["oracle_accuracy"] == round(float(matrix.any(axis=1).mean()), 4)
    assert result["best_single"] == [MODELS[0]]  # the slice's most accurate model on every training split


def test_synthetic_cases_are_one_right_two_wrong(questions: dict[int, Question]) -> None:
    ids = sorted(questions)[:60]
    responses = recorded_responses(OUTPUTS, ids)
    assert set(responses) == set(ids) and all(set(r) == set(MODELS) for r in responses.values())
    made = 0
    for qid in ids:
        question, answers = questions[qid], responses[qid]
        cases = synthetic_candidates(question, answers, seed=0)
        right = [e for e, text in answers.items() if extract_choice(text) == question.answer]
        if not right or len(answers) - len(right) < 2:
            assert cases is None
            continue
        assert cases is not None and len({c.expert for c in cases}) == 3
        assert sum(extract_choice(c.content) == question.answer for c in cases) == 1
        assert cases == synthetic_candidates(question, answers, seed=0), "seeded: the same every time"
        made += 1
    assert made > 5
