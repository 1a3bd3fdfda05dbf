"""Trainer of artifact kind ``answers``: calibrated reliability of each expert's answers, a
confidence model for cascades, and a category classifier that ranks experts for a query.

From a profile built with answer descriptions (``Profile.answers``: letter, form, quote, valid,
length of every expert's answer to every dev question) and the questions' embeddings:

- a softmax classifier from query embedding to category (as ``coe``'s), and each expert's
  smoothed accuracy per category (``A``): the router ``ranked`` orders experts by it;
- ``T``, each expert's chance of being right per category and answer form, smoothed towards its
  chance per form (``ALPHA`` pseudo-questions), the weights of the ``weighted-vote`` aggregator;
- the confidence model (``coe.aggregators.reliability``): a logistic regression over the leader's
  features after 1, 2, ... answers taken in the ranked order and in a random order, on every
  training question, with category probabilities and tables fitted *without* that question
  (5 inner folds, ``(question_id // 5) % 5``), so its inputs look like a live query's;
- ``sim_*``: those out-of-fold inputs for every training question (category probabilities, each
  expert's answer description), from which a cascade calibrates its threshold to a budget of
  calls or cost when a graph is built (``coe.graph.nodes.cascade``);
- the calibration of the confidence model (10 bins, on questions it was not fitted on), drawn by
  :func:`plot_calibration`.

Labels (category, gold answers) are read here, at training time only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coe.aggregators.reliability import CONFIDENCE_FEATURES, FORMS, AnswerFeatures, Reliability
from coe.errors import UserError
from coe.questions.extract import LETTERS
from coe.routing.train import TrainData, _base_meta, _logistic, category_c

__all__ = ["ALPHA", "decode", "plot_calibration", "train_answers"]

#: pseudo-questions of smoothing towards an expert's rate per form (chosen on dev by CV)
ALPHA = 20.0
CONFIDENCE_C = 1.0
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def decode(code: str) -> AnswerFeatures:
    """One 5-character answer description (``coe.routing.profiles.ANSWER_CODE``)."""
    letter = None if code[0] == "-" else code[0]
    length = 100 * _BASE36.index(code[4]) + 50
    return AnswerFeatures(letter, int(code[1]), code[2] == "1", code[3] == "1", length)


def _codes(data: TrainData) -> list[list[str]]:
    """Per question, each expert's answer description."""
    answers = data.profile.answers
    missing = [e for e in data.experts if e not in answers]
    if missing:
        raise UserError(
            f"the profile has no answer descriptions for {', '.join(missing)}: rebuild it with "
            "`coe profile --replay-dir ...` (artifact kind 'answers' needs them)"
        )
    n = len(data.profile.question_ids)
    return [[answers[e][5 * i : 5 * i + 5] for e in data.experts] for i in range(n)]


def _tables(
    codes: list[list[str]], correct: NDArray[np.bool_], cats: NDArray[np.int_], n_cats: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``T`` (experts × categories × forms) and ``A`` (experts × categories), smoothed."""
    n_experts = correct.shape[1]
    forms = np.array([[int(c[1]) for c in row] for row in codes]).reshape(-1, n_experts)
    table = np.zeros((n_experts, n_cats, len(FORMS)))
    acc = np.zeros((n_experts, n_cats))
    for e in range(n_experts):
        overall = (correct[:, e].sum() + 1) / (len(correct) + 2)
        for c in range(n_cats):
            in_cat = cats == c
            acc[e, c] = (correct[in_cat, e].sum() + ALPHA * overall) / (in_cat.sum() + ALPHA)
        for f in range(len(FORMS)):
            has = forms[:, e] == f
            rate = (correct[has, e].sum() + overall) / (has.sum() + 1)
            for c in range(n_cats):
                cell = has & (cats == c)
                table[e, c, f] = (correct[cell, e].sum() + ALPHA * rate) / (cell.sum() + ALPHA)
    return table, acc


def _classifier(data: TrainData, rows: NDArray[np.bool_] | slice, cats: NDArray[np.int_]) -> Any:
    return _logistic(category_c(data.embedder)).fit(data.vectors[rows], cats)


def _probs(model: Any, x: NDArray[np.float32], n_cats: int) -> NDArray[np.float64]:
    out = np.zeros((len(x), n_cats))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _walks(
    model: Reliability,
    codes: list[str],
    probs: NDArray[np.float64],
    order: list[int],
    options: int,
    gold: str,
) -> list[tuple[list[float], bool]]:
    """Confidence-model rows along one order: after 1, 2, ... answers."""
    answers: list[tuple[str, AnswerFeatures]] = []
    rows = []
    for e in order:
        answers.append((model.experts[e], decode(codes[e])))
        tally, inputs = model.features(answers, probs, options)
        rows.append((inputs, tally.leader == gold))
    return rows


def _inner_oof(
    data: TrainData, codes: list[list[str]], cats: NDArray[np.int_], labels: list[str]
) -> tuple[NDArray[np.float64], list[tuple[list[float], bool, int]]]:
    """Out-of-fold category probabilities and confidence rows (with each row's inner fold)."""
    ids = np.array(data.profile.question_ids)
    inner = (ids // 5) % 5
    correct = data.profile.matrix(data.experts)
    probs = np.zeros((len(ids), len(labels)))
    rows: list[tuple[list[float], bool, int]] = []
    gold = _gold(data, codes)
    rng = random.Random(0)
    for k in range(5):
        test = inner == k
        if not test.any() or test.all():
            continue
        clf = _classifier(data, ~test, cats[~test])
        probs[test] = _probs(clf, data.vectors[test], len(labels))
        table, acc = _tables(
            [codes[i] for i in np.flatnonzero(~test)], correct[~test], cats[~test], len(labels)
        )
        model = Reliability(data.experts, labels, table, [0.0] * (len(CONFIDENCE_FEATURES) + 1))
        for i in np.flatnonzero(test):
            ranked = list(np.argsort(-(acc @ probs[i]), kind="stable"))
            shuffled = rng.sample(range(len(data.experts)), len(data.experts))
            for order in (ranked, shuffled):
                for inputs, right in _walks(model, codes[i], probs[i], order, 10, gold[i]):
                    rows.append((inputs, right, k))
    return probs, rows


def _gold(data: TrainData, codes: list[list[str]]) -> list[str]:
    """Each question's right letter, read from an expert that got it right ("" if none did)."""
    correct = data.profile.matrix(data.experts)
    out = []
    for i, row in enumerate(codes):
        right = [row[e][0] for e in range(len(row)) if correct[i, e]]
        out.append(right[0] if right else "")
    return out


def _calibration(x: NDArray[np.float64], y: NDArray[np.bool_], folds: NDArray[np.int_]) -> dict[str, Any]:
    """The confidence model's calibration on rows of questions it was not fitted on: 10 bins."""
    predicted = np.zeros(len(y))
    for k in np.unique(folds):
        test = folds == k
        fit = _logistic(CONFIDENCE_C).fit(x[~test], y[~test])
        predicted[test] = fit.predict_proba(x[test])[:, 1]
    bins = np.minimum((predicted * 10).astype(int), 9)
    table = [
        {
            "bin": b,
            "n": int((bins == b).sum()),
            "predicted": round(float(predicted[bins == b].mean()), 4) if (bins == b).any() else None,
            "observed": round(float(y[bins == b].mean()), 4) if (bins == b).any() else None,
        }
        for b in range(10)
    ]
    brier = float(np.mean((predicted - y) ** 2))
    ece = sum(
        abs(float(predicted[bins == b].mean()) - float(y[bins == b].mean())) * int((bins == b).sum())
        for b in range(10)
        if (bins == b).any()
    ) / len(y)
    return {"bins": table, "brier": round(brier, 4), "ece": round(ece, 4), "rows": len(y)}


def train_answers(data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    codes = _codes(data)
    labels = sorted(set(data.profile.categories))
    if len(labels) < 2:
        raise UserError("training kind 'answers' needs at least two categories")
    cats = np.array([labels.index(c) for c in data.profile.categories])
    probs, rows = _inner_oof(data, codes, cats, labels)
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    folds = np.array([r[2] for r in rows])
    fit = _logistic(CONFIDENCE_C).fit(x, y)
    coef = [*(float(c) for c in fit.coef_[0]), float(fit.intercept_[0])]
    clf = _classifier(data, slice(None), cats)
    table, acc = _tables(codes, data.profile.matrix(data.experts), cats, len(labels))
    meta = _base_meta(data, "answers") | {
        "labels": labels,
        "forms": list(FORMS),
        "alpha": ALPHA,
        "confidence": {
            "features": list(CONFIDENCE_FEATURES),
            "coef": [round(c, 6) for c in coef],
            "calibration": _calibration(x, y, folds),
        },
    }
    letters = np.array(
        [[LETTERS.index(c[0]) if c[0] != "-" else -1 for c in row] for row in codes], dtype=np.int8
    )
    arrays: dict[str, NDArray[Any]] = {
        "W": _full_coef(clf, len(labels), data.vectors.shape[1])[0],
        "b": _full_coef(clf, len(labels), data.vectors.shape[1])[1],
        "T": table.astype(np.float32),
        "A": acc.astype(np.float32),
        "sim_probs": probs.astype(np.float16),
        "sim_letter": letters,
        "sim_form": np.array([[int(c[1]) for c in row] for row in codes], dtype=np.int8),
        "sim_quotes": np.array([[int(c[2]) for c in row] for row in codes], dtype=np.int8),
        "sim_valid": np.array([[int(c[3]) for c in row] for row in codes], dtype=np.int8),
        "sim_length": np.array([[_BASE36.index(c[4]) for c in row] for row in codes], dtype=np.int8),
    }
    return meta, arrays


def _full_coef(clf: Any, n_cats: int, dims: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Classifier weights with a row per label (a label missing from training never wins)."""
    weights = np.zeros((n_cats, dims), dtype=np.float32)
    bias = np.full(n_cats, -30.0, dtype=np.float32)
    weights[clf.classes_] = clf.coef_
    bias[clf.classes_] = clf.intercept_
    return weights, bias


def plot_calibration(artifact: Path, meta: dict[str, Any]) -> Path:
    """Draw the confidence model's reliability diagram beside the artifact (``*.calibration.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calib = meta["confidence"]["calibration"]
    bins = [b for b in calib["bins"] if b["n"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(
        [b["predicted"] for b in bins],
        [b["observed"] for b in bins],
        marker="o",
        label=f"confidence model (ECE {calib['ece']:.3f}, Brier {calib['brier']:.3f})",
    )
    for b in bins:
        ax.annotate(
            str(b["n"]),
            (b["predicted"], b["observed"]),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ax.set_xlabel("predicted chance that the leading answer is right")
    ax.set_ylabel("observed share right")
    ax.set_title(f"cascade confidence, out of fold ({calib['rows']} steps)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = artifact.with_suffix(".calibration.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
