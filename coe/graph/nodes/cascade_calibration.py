"""Calibrate a cascade's confidence threshold to a budget, on the artifact's dev questions.

The ``answers`` artifact keeps, for every question it was trained on, what a live cascade would
have seen there: the router's category probabilities fitted without that question and each
expert's answer description. The cascade is walked on each question with the node's own order,
steps and tests (the same :meth:`CascadeNode.verdict` as at run time), recording after each step
whether the other tests pass, the confidence, and the calls and cost so far. The threshold is then
the *highest* one whose mean calls (or mean cost, from each expert's mean cost per question) stays
within the budget: a higher threshold asks more experts before accepting, so it is the most
accurate cascade the budget allows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from coe.aggregators.reliability import AnswerFeatures
from coe.errors import UserError
from coe.questions.extract import LETTERS

if TYPE_CHECKING:
    from coe.graph.nodes.cascade import CascadeNode

__all__ = ["calibrate", "simulate"]


def _features(arrays: dict[str, NDArray[np.int8]], i: int, j: int) -> AnswerFeatures:
    letter = int(arrays["sim_letter"][i, j])
    return AnswerFeatures(
        LETTERS[letter] if letter >= 0 else None,
        int(arrays["sim_form"][i, j]),
        bool(arrays["sim_quotes"][i, j]),
        bool(arrays["sim_valid"][i, j]),
        100 * int(arrays["sim_length"][i, j]) + 50,
    )


def simulate(node: CascadeNode) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per dev question and step: confidence where the other tests pass (else −inf), and the
    calls and cost spent by the end of that step (steps past the last are repeated)."""
    router = node.router
    artifact = router.artifact
    arrays = {k: artifact.arrays[k] for k in artifact.arrays if k.startswith("sim_")}
    column = {e: artifact.experts.index(e) for e in router.pool}
    cost = {e: float(artifact.meta["cost_per_query"][e]) for e in router.pool}
    probs_all = np.asarray(arrays["sim_probs"], dtype=np.float32)
    fixed = list(node.params.experts or [])  # type: ignore[attr-defined]
    unknown = [e for e in fixed if e not in column]
    if unknown:
        raise UserError(f"node {node.name!r}: the artifact has no dev answers of {', '.join(unknown)}")
    cap = node.params.max_experts  # type: ignore[attr-defined]
    rows_conf: list[list[float]] = []
    rows_calls: list[list[float]] = []
    rows_cost: list[list[float]] = []
    for i, probs in enumerate(probs_all):
        names = (fixed or router.rank(probs))[: cap or None]
        answers: list[tuple[str, AnswerFeatures]] = []
        conf: list[float] = []
        calls: list[float] = []
        spent: list[float] = []
        for batch in node.batches(names):
            answers += [(e, _features(arrays, i, column[e])) for e in batch]
            verdict = node.verdict(answers, probs, None)
            others = all(ok for name, ok in verdict.tests.items() if name != "confidence")
            conf.append(verdict.confidence if others and verdict.confidence is not None else -np.inf)
            calls.append(float(len(answers)))
            spent.append(sum(cost[e] for e, _ in answers))
        rows_conf.append(conf)
        rows_calls.append(calls)
        rows_cost.append(spent)
    width = max(len(r) for r in rows_conf)

    def pad(rows: list[list[float]], fill_last: bool) -> NDArray[np.float64]:
        return np.array([r + [r[-1] if fill_last else -np.inf] * (width - len(r)) for r in rows])

    return pad(rows_conf, False), pad(rows_calls, True), pad(rows_cost, True)


def _spend(conf: NDArray[np.float64], spent: NDArray[np.float64], threshold: float) -> float:
    ok = conf >= threshold
    last = conf.shape[1] - 1
    stop = np.where(ok.any(axis=1), ok.argmax(axis=1), last)
    return float(spent[np.arange(len(stop)), stop].mean())


def calibrate(node: CascadeNode, max_calls: float | None, max_cost: float | None) -> float:
    """The highest confidence threshold whose mean calls (or cost) on dev stays in budget."""
    if node.router is None:
        raise UserError(f"node {node.name!r}: calibrating a threshold needs an artifact")
    if "sim_probs" not in node.router.artifact.arrays:
        raise UserError(f"{node.router.artifact.path}: no dev questions to calibrate on")
    conf, calls, cost = simulate(node)
    spent, budget = (calls, max_calls) if max_calls is not None else (cost, max_cost)
    assert budget is not None
    candidates = np.unique(conf[np.isfinite(conf)])
    if len(candidates) == 0 or _spend(conf, spent, float(candidates[0])) > budget:
        return 0.0
    lo, hi = 0, len(candidates) - 1  # candidates[lo] is within budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _spend(conf, spent, float(candidates[mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == len(candidates) - 1 and _spend(conf, spent, np.inf) <= budget:
        return 1.0
    return float(candidates[lo])
