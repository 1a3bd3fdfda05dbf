"""The accuracy–budget frontier of several runs on the same questions (``coe report``).

A run is a ``coe eval`` output folder (``results.jsonl`` + ``summary.json``: in-sample when the
graph's artifacts were trained on these questions, and labelled so) or a cross-validation folder
of ``coe train --cv`` (``cv.json`` + ``fold*/eval/results.jsonl``: every question answered by a
router trained without it). Each run becomes a point at its accuracy, mean calls and mean cost
per question; the Pareto frontier (no other cross-validated run is at least as accurate for no
more calls, or cost) is drawn through the cross-validated points only, beside the best single
expert (chosen on the training folds for CV runs) and the oracle (the best possible pick among
the experts, per question). Runs must hold the same questions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coe.errors import UserError

__all__ = ["Run", "load_run", "pareto", "write_frontier"]


@dataclass(slots=True)
class Run:
    path: Path
    graph: str
    cross_validated: bool
    correct: dict[int, bool]
    calls: dict[int, int]
    cost: dict[int, float]
    best_single: tuple[str, float, float] | None = None  # name, accuracy, cost per question
    oracle: float | None = None
    experts: dict[str, tuple[float, float]] = field(default_factory=dict)  # accuracy, cost/question

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return sum(self.correct.values()) / max(self.n, 1)

    @property
    def calls_per_question(self) -> float:
        return sum(self.calls.values()) / max(self.n, 1)

    @property
    def cost_per_question(self) -> float:
        return sum(self.cost.values()) / max(self.n, 1)

    @property
    def label(self) -> str:
        return self.graph.removeprefix("mmlu_pro/") + ("" if self.cross_validated else " (in-sample)")


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _fill(run: Run, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        qid = int(row["question_id"])
        run.correct[qid] = bool(row["correct"])
        run.calls[qid] = len(row["experts"])
        run.cost[qid] = float(row["usage"]["cost"])


def _expert_points(summaries: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Each expert's accuracy and cost per question over these summaries' questions."""
    totals: dict[str, list[float]] = {}
    for summary in summaries:
        n = summary["n"]
        for name, entry in (summary.get("comparison") or {}).get("experts", {}).items():
            if entry.get("accuracy") is None:
                continue
            total = totals.setdefault(name, [0.0, 0.0, 0.0])
            total[0] += entry["accuracy"] * n
            total[1] += entry["cost"]
            total[2] += n
    return {name: (t[0] / t[2], t[1] / t[2]) for name, t in totals.items() if t[2]}


def load_run(path: Path) -> Run:
    """A cross-validation folder (``cv.json``) or a ``coe eval`` folder."""
    if (path / "cv.json").is_file():
        cv = json.loads((path / "cv.json").read_text(encoding="utf-8"))
        run = Run(path, cv["graph"], True, {}, {}, {})
        summaries = []
        for fold in sorted(path.glob("fold*/eval")):
            _fill(run, _rows(fold / "results.jsonl"))
            summaries.append(json.loads((fold / "summary.json").read_text(encoding="utf-8")))
        best = cv["best_single"][0] if len(cv["best_single"]) == 1 else "/".join(cv["best_single"])
        run.best_single = (best, cv["best_single_accuracy"], cv["best_single_cost"] / max(cv["n"], 1))
        run.oracle = cv["oracle_accuracy"]
        run.experts = _expert_points(summaries)
        return run
    if (path / "summary.json").is_file() and (path / "results.jsonl").is_file():
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        run = Run(path, summary["graph"], False, {}, {}, {})
        _fill(run, _rows(path / "results.jsonl"))
        comparison = summary.get("comparison") or {}
        run.experts = _expert_points([summary])
        if comparison.get("best_single"):
            name = comparison["best_single"]
            run.best_single = (name, comparison["best_single_accuracy"], run.experts.get(name, (0.0, 0.0))[1])
        run.oracle = comparison.get("oracle_accuracy")
        return run
    raise UserError(f"{path}: neither a cross-validation folder (cv.json) nor a coe eval folder")


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as accurate or more for no more budget
    (``(budget, accuracy)`` pairs), in order of budget."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _check_same_questions(runs: Sequence[Run]) -> None:
    first = set(runs[0].correct)
    for run in runs[1:]:
        if set(run.correct) != first:
            raise UserError(
                f"{run.path} holds {run.n} questions, {runs[0].path} {len(first)}: "
                "the frontier compares runs on the same questions"
            )


def _summary(runs: Sequence[Run]) -> dict[str, Any]:
    cv = [r for r in runs if r.cross_validated]
    calls_front = {cv[i].graph for i in pareto([(r.calls_per_question, r.accuracy) for r in cv])}
    cost_front = {cv[i].graph for i in pareto([(r.cost_per_question, r.accuracy) for r in cv])}
    reference = next((r for r in cv if r.best_single), next((r for r in runs if r.best_single), None))
    return {
        "n": runs[0].n,
        "runs": [
            {
                "graph": r.graph,
                "path": str(r.path),
                "cross_validated": r.cross_validated,
                "accuracy": round(r.accuracy, 4),
                "calls_per_question": round(r.calls_per_question, 3),
                "cost_per_question": round(r.cost_per_question, 8),
                "frontier_calls": r.graph in calls_front,
                "frontier_cost": r.graph in cost_front,
            }
            for r in runs
        ],
        "best_single": None
        if reference is None or reference.best_single is None
        else {
            "expert": reference.best_single[0],
            "accuracy": round(reference.best_single[1], 4),
            "cost_per_question": round(reference.best_single[2], 8),
        },
        "oracle": None if reference is None or reference.oracle is None else round(reference.oracle, 4),
    }


def _markdown(summary: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{summary['n']} questions. CV: cross-validated (each question answered by a router trained "
        "without it); in-sample runs are shown but never on the frontier.",
        "",
        "| graph | accuracy | calls / question | cost / question | frontier (calls) | frontier (cost) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(summary["runs"], key=lambda r: r["cost_per_question"]):
        label = r["graph"] + ("" if r["cross_validated"] else " (in-sample)")
        lines.append(
            f"| `{label}` | {100 * r['accuracy']:.1f}% | {r['calls_per_question']:.2f} | "
            f"${r['cost_per_question']:.6f} | {'yes' if r['frontier_calls'] else ''} | "
            f"{'yes' if r['frontier_cost'] else ''} |"
        )
    best = summary["best_single"]
    if best:
        lines.append(
            f"| best single: `{best['expert']}` | {100 * best['accuracy']:.1f}% | 1.00 | "
            f"${best['cost_per_question']:.6f} | | |"
        )
    if summary["oracle"] is not None:
        lines.append(f"| oracle (best pick per question) | {100 * summary['oracle']:.1f}% | — | — | | |")
    return "\n".join([*lines, "", "![frontier](frontier.png)", ""])


def _plot(runs: Sequence[Run], summary: dict[str, Any], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, attr, xlabel in (
        (axes[0], "calls_per_question", "expert calls per question"),
        (axes[1], "cost_per_question", "cost per question (USD)"),
    ):
        cv = [r for r in runs if r.cross_validated]
        front = [cv[i] for i in pareto([(getattr(r, attr), r.accuracy) for r in cv])]
        if attr == "cost_per_question" and runs[0].experts:
            for name, (acc, cost) in runs[0].experts.items():
                ax.scatter(cost, 100 * acc, color="lightgrey", s=18, zorder=1)
                ax.annotate(name, (cost, 100 * acc), fontsize=6, color="grey")
        ax.plot(
            [getattr(r, attr) for r in front],
            [100 * r.accuracy for r in front],
            color="tab:red",
            linestyle="-",
            zorder=2,
            label="Pareto frontier (cross-validated)",
        )
        for r in runs:
            marker, color = ("o", "tab:blue") if r.cross_validated else ("x", "tab:orange")
            ax.scatter(getattr(r, attr), 100 * r.accuracy, marker=marker, color=color, zorder=3)
            ax.annotate(
                r.label,
                (getattr(r, attr), 100 * r.accuracy),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        best = summary["best_single"]
        if best:
            x = 1.0 if attr == "calls_per_question" else best["cost_per_question"]
            ax.scatter(
                x,
                100 * best["accuracy"],
                marker="*",
                s=180,
                color="tab:green",
                zorder=4,
                label=f"best single ({best['expert']})",
            )
        if summary["oracle"] is not None:
            ax.axhline(
                100 * summary["oracle"],
                color="grey",
                linestyle="--",
                label=f"oracle {100 * summary['oracle']:.1f}%",
            )
        if attr == "cost_per_question":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=100)
    plt.close(fig)


def write_frontier(
    paths: Sequence[Path], out: Path, title: str = "Accuracy against budget"
) -> dict[str, Any]:
    """Load the runs, check they share their questions, write frontier.{json,md,png} to ``out``."""
    if not paths:
        raise UserError("name at least one run folder")
    runs = [load_run(p) for p in paths]
    _check_same_questions(runs)
    summary = _summary(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "frontier.md").write_text(_markdown(summary, title), encoding="utf-8")
    _plot(runs, summary, out, title)
    return summary
