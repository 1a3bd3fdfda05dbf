"""The cost–accuracy curve of a cost-threshold router (RouteLLM style), for ``report.md``.

When a graph routes with ``cost-threshold``, the report sweeps its threshold over the evaluated
questions: with the ``m`` highest-scoring questions sent to the strong expert and the rest to the
router's weak pick, accuracy is read from the replayed experts' answers, for every ``m``. The
curve plots accuracy against the share of strong calls; its area (share from 0 to 1) sums it up,
beside the straight line of random mixing between the two extremes. Other graphs: nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coe.questions.datasets import Question

if TYPE_CHECKING:
    from coe.eval.report import ExpertRecord
    from coe.eval.runner import EvalRun
    from routers.cost_threshold import CostThresholdRouter

__all__ = ["Curve", "cost_curve"]


@dataclass(frozen=True, slots=True)
class Curve:
    strong: str
    share: list[float]
    accuracy: list[float]
    auc: float
    random_auc: float
    point: tuple[float, float]

    def summary(self) -> dict[str, Any]:
        return {
            "strong": self.strong,
            "auc": round(self.auc, 4),
            "random_mix_auc": round(self.random_auc, 4),
            "weak_only_accuracy": round(self.accuracy[0], 4),
            "strong_only_accuracy": round(self.accuracy[-1], 4),
            "run": {"strong_share": round(self.point[0], 4), "accuracy": round(self.point[1], 4)},
        }

    def markdown(self) -> str:
        marks = [0.1, 0.2, 0.3, 0.5, 0.7]
        cells = [f"{100 * np.interp(m, self.share, self.accuracy):.1f}" for m in marks]
        return "\n".join(
            [
                "",
                f"## Cost–accuracy curve (strong expert `{self.strong}`)",
                "",
                f"Sweeping the threshold over these questions: area under accuracy vs share of strong "
                f"calls **{self.auc:.4f}** (random mixing: {self.random_auc:.4f}); weak only "
                f"{100 * self.accuracy[0]:.1f}%, strong only {100 * self.accuracy[-1]:.1f}%; this run: "
                f"{100 * self.point[0]:.1f}% strong calls, {100 * self.point[1]:.1f}%.",
                "",
                "| strong share | " + " | ".join(f"{int(100 * m)}%" for m in marks) + " |",
                "|---|" + "---|" * len(marks),
                "| accuracy (%) | " + " | ".join(cells) + " |",
                "",
                "![cost-accuracy curve](cost_curve.png)",
                "",
            ]
        )


def _router(run: EvalRun) -> CostThresholdRouter | None:
    from coe.graph.nodes.route import RouteNode
    from routers.cost_threshold import CostThresholdRouter

    for node in run.pipeline.nodes.values():
        if isinstance(node, RouteNode) and isinstance(node.router, CostThresholdRouter):
            return node.router
    return None


async def cost_curve(
    run: EvalRun,
    questions: Sequence[Question],
    shots: dict[str, list[Question]],
    rows: Mapping[int, Any],
    records: Mapping[str, ExpertRecord],
    out: Path,
) -> Curve | None:
    """The curve for a cost-threshold graph over replayed experts, else ``None``."""
    router = _router(run)
    if router is None or router.strong not in records:
        return None
    gold = {q.question_id: q.answer for q in questions if q.question_id in rows}
    scored: list[tuple[float, bool, bool]] = []
    for question in questions:
        qid = question.question_id
        if qid not in gold:
            continue
        score, weak = await router.score(run.messages(question, shots))
        if weak not in records or qid not in records[weak].predictions:
            return None
        right = records[router.strong].predictions.get(qid) == gold[qid]
        scored.append((score, right, records[weak].predictions[qid] == gold[qid]))
    if not scored:
        return None
    scored.sort(key=lambda s: -s[0])
    strong_ok = np.array([s[1] for s in scored], dtype=float)
    weak_ok = np.array([s[2] for s in scored], dtype=float)
    n = len(scored)
    # m strong calls: the first m (highest scores) strong, the rest weak
    accuracy = (
        np.concatenate([[0.0], np.cumsum(strong_ok)])
        + np.concatenate([np.cumsum(weak_ok[::-1])[::-1], [0.0]])
    ) / n
    share = np.arange(n + 1) / n
    calls = [e for r in rows.values() for e in r["experts"]]
    point = (
        calls.count(router.strong) / max(1, len(rows)),
        float(np.mean([r["correct"] for r in rows.values()])),
    )
    curve = Curve(
        router.strong,
        share.tolist(),
        accuracy.tolist(),
        float(np.trapezoid(accuracy, share)),
        float((accuracy[0] + accuracy[-1]) / 2),
        point,
    )
    _plot(curve, out)
    return curve


def _plot(curve: Curve, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    share = [100 * s for s in curve.share]
    ax.plot(share, [100 * a for a in curve.accuracy], label=f"cost-threshold router (AUC {curve.auc:.3f})")
    ax.plot(
        [0, 100],
        [100 * curve.accuracy[0], 100 * curve.accuracy[-1]],
        linestyle="--",
        color="grey",
        label=f"random mix (AUC {curve.random_auc:.3f})",
    )
    ax.scatter(
        [100 * curve.point[0]], [100 * curve.point[1]], color="tab:red", marker="*", s=160, label="this run"
    )
    ax.set_xlabel(f"share of calls to the strong expert ({curve.strong}) (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("cost–accuracy curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cost_curve.png", dpi=100)
    plt.close(fig)
