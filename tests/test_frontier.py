"""``coe report``: the frontier of runs on the same questions, cross-validated runs apart from
in-sample ones, with best single and oracle; runs on different questions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coe.cli import main
from coe.errors import UserError
from coe.eval.frontier import load_run, pareto, write_frontier


def rows(correct: list[bool], calls: int, cost: float) -> str:
    return "".join(
        json.dumps({"question_id": i, "correct": ok, "experts": ["e"] * calls, "usage": {"cost": cost}})
        + "\n"
        for i, ok in enumerate(correct)
    )


def eval_run(folder: Path, graph: str, correct: list[bool], calls: int, cost: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text(rows(correct, calls, cost))
    comparison = {"best_single": "e", "best_single_accuracy": 0.5, "oracle_accuracy": 0.9, "experts": {}}
    summary = {"graph": graph, "n": len(correct), "comparison": comparison}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def cv_run(folder: Path, graph: str, correct: list[bool], calls: int, cost: float) -> Path:
    eval_run(folder / "fold0" / "eval", graph, correct, calls, cost)
    cv = {
        "graph": graph,
        "n": len(correct),
        "best_single": ["e"],
        "best_single_accuracy": 0.5,
        "best_single_cost": 0.1 * len(correct),
        "oracle_accuracy": 0.9,
    }
    (folder / "cv.json").write_text(json.dumps(cv))
    return folder


def test_pareto() -> None:
    assert pareto([(1, 0.4), (2, 0.5), (3, 0.45), (8, 0.6), (2, 0.3)]) == [0, 1, 3]


def test_frontier_of_runs(tmp_path: Path) -> None:
    cheap = cv_run(tmp_path / "cheap", "mmlu_pro/cheap", [True, False, False, False], 1, 0.1)
    dear = cv_run(tmp_path / "dear", "mmlu_pro/dear", [True, True, True, False], 3, 0.3)
    worse = cv_run(tmp_path / "worse", "mmlu_pro/worse", [True, False, False, False], 4, 0.4)
    inside = eval_run(tmp_path / "inside", "mmlu_pro/inside", [True] * 4, 1, 0.1)
    assert load_run(inside).label == "inside (in-sample)" and load_run(cheap).cross_validated
    out = tmp_path / "out"
    assert main(["report", str(cheap), str(dear), str(worse), str(inside), "--out", str(out)]) == 0
    summary = json.loads((out / "frontier.json").read_text())
    front = {r["graph"] for r in summary["runs"] if r["frontier_calls"]}
    assert front == {"mmlu_pro/cheap", "mmlu_pro/dear"}  # in-sample runs are never on it
    assert summary["best_single"]["accuracy"] == 0.5 and summary["oracle"] == 0.9
    assert (out / "frontier.png").stat().st_size > 1000
    assert "`mmlu_pro/inside (in-sample)`" in (out / "frontier.md").read_text()


def test_runs_must_share_their_questions(tmp_path: Path) -> None:
    one = cv_run(tmp_path / "one", "a", [True, False], 1, 0.1)
    two = cv_run(tmp_path / "two", "b", [True, False, True], 1, 0.1)
    with pytest.raises(UserError, match="same questions"):
        write_frontier([one, two], tmp_path / "out")
