"""Trainers: a profile and the embeddings of its questions → a router artifact.

One trainer per artifact kind (the ``kind`` of the router a graph names):

- ``category``: a softmax classifier from query embedding to MMLU-Pro category, plus each expert's
  per-category and overall accuracy and mean cost per query (``coe``, ``bench-coe-subject``);
- ``correctness``: one logistic model per expert, query embedding → chance of a correct answer,
  with its chances on the training questions for threshold calibration
  (``bench-coe-query``, ``cost-threshold``);
- ``skills``: Symbolic-MoE's per-skill +1/−1 scores, with skills taken from the training labels
  (MMLU-Pro's ``src`` subjects, as readable keywords) or, as in the paper, from an LLM's keywords
  per question (``TrainData.keywords``, several per question), each skill's mean question
  embedding and the embedding of its name (``symbolic-moe``).

Labels (category, src) are read here, at training time only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coe.errors import UserError
from coe.routing.profiles import Profile
from routers.embedding import MODEL_NAME, Embedder
from routers.static_embedding import STATIC_NAME

__all__ = ["TRAINERS", "TrainData", "skill_name", "train"]

#: inverse L2 strength of the logistic models (chosen by 5-fold CV on dev; see README): the
#: category classifier's per embedder (the static table's vectors are less separable: 16 beats 4
#: there, 75.6% against 74.4% of held-out questions' categories; on MiniLM 4 is best, 80.2%)
CATEGORY_C = {MODEL_NAME: 4.0, STATIC_NAME: 16.0}
CORRECTNESS_C = 0.02


def category_c(embedder: Embedder) -> float:
    """The category classifier's C for vectors from ``embedder`` (MiniLM's for one not listed)."""
    return CATEGORY_C.get(embedder.model_name, CATEGORY_C[MODEL_NAME])


@dataclass(frozen=True, slots=True)
class TrainData:
    """A profile, the embeddings of its questions (rows in profile order) and the embedder."""

    profile: Profile
    vectors: NDArray[np.float32]
    embedder: Embedder
    experts: Sequence[str]
    #: skills per question from an LLM annotator (``--skills llm``); None: the ``src`` labels
    keywords: Mapping[int, Sequence[str]] | None = None

    def subset(self, question_ids: Sequence[int]) -> TrainData:
        where = self.profile.index()
        rows = [where[q] for q in question_ids if q in where]
        kept = [self.profile.question_ids[i] for i in rows]
        profile = self.profile.subset(kept)
        return TrainData(profile, self.vectors[rows], self.embedder, self.experts, self.keywords)

    def skill_labels(self) -> list[list[str]]:
        """The skills of each profile question, in profile order."""
        if self.keywords is not None:
            return [sorted(set(self.keywords.get(q, ()))) for q in self.profile.question_ids]
        return [[name] if (name := skill_name(s)) else [] for s in self.profile.skills]


Trainer = Callable[[TrainData], tuple[dict[str, Any], dict[str, NDArray[Any]]]]


def _base_meta(data: TrainData, kind: str) -> dict[str, Any]:
    profile = data.profile
    return {
        "kind": kind,
        "experts": list(data.experts),
        "embedding": {"model": data.embedder.model_name, "max_tokens": data.embedder.max_tokens},
        "trained_on": {
            "dataset": profile.dataset,
            "questions": len(profile.question_ids),
            "source": profile.source,
        },
        "overall": {k: round(v, 6) for k, v in profile.overall(data.experts).items()},
        "cost_per_query": {e: profile.cost_per_query[e] for e in data.experts},
    }


def _logistic(c: float, seed: int = 0) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, random_state=seed)


def train_category(data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    labels = np.array(data.profile.categories)
    if len(set(labels)) < 2:
        raise UserError("training a category classifier needs at least two categories")
    model = _logistic(category_c(data.embedder)).fit(data.vectors, labels)
    per_category = data.profile.per_category(data.experts)
    meta = _base_meta(data, "category") | {
        "labels": [str(c) for c in model.classes_],
        "per_category": {c: {k: round(v, 6) for k, v in row.items()} for c, row in per_category.items()},
    }
    arrays = {"W": model.coef_.astype(np.float32), "b": model.intercept_.astype(np.float32)}
    return meta, arrays


def _fit_correctness(x: NDArray[np.float32], y: NDArray[np.bool_]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Per-expert logistic weights (experts × dims) and biases; constant columns get a constant."""
    weights = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    bias = np.zeros(y.shape[1], dtype=np.float32)
    for j in range(y.shape[1]):
        rate = float(np.clip(y[:, j].mean(), 1e-3, 1 - 1e-3))
        if y[:, j].all() or not y[:, j].any():
            bias[j] = np.log(rate / (1 - rate))
            continue
        model = _logistic(CORRECTNESS_C).fit(x, y[:, j])
        weights[j], bias[j] = model.coef_[0], model.intercept_[0]
    return weights, bias


def train_correctness(data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    x = data.vectors
    y = data.profile.matrix(data.experts)
    weights, bias = _fit_correctness(x, y)
    # the model's own chances on its training questions: thresholds are calibrated on these
    calib = 1 / (1 + np.exp(-(x @ weights.T + bias)))
    meta = _base_meta(data, "correctness")
    return meta, {"W": weights, "b": bias, "calib": calib.astype(np.float16)}


def skill_name(src: str) -> str:
    """A readable keyword from MMLU-Pro's ``src``: ``ori_mmlu-high_school_physics`` → high school physics."""
    name = src.split("-", 1)[1] if "-" in src else src
    return " ".join(re.sub(r"[_\s]+", " ", name).lower().split())


def train_skills(data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    labels = data.skill_labels()
    skills = sorted({s for names in labels for s in names})
    if not skills:
        raise UserError(
            "the profile has no skill labels (build it with --data-path to read MMLU-Pro's src, "
            "or the annotator kept no keyword)"
        )
    y = data.profile.matrix(data.experts)
    signed = 2 * y.astype(np.int32) - 1
    member = np.array([[s in names for s in skills] for names in labels], dtype=bool)  # questions × skills
    scores = (member.T.astype(np.int32) @ signed).astype(np.float32)
    counts_arr = member.sum(axis=0)
    protos = (member.T.astype(np.float32) @ data.vectors) / counts_arr[:, None]
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    counts = {s: int(n) for s, n in zip(skills, counts_arr, strict=True)}
    meta = _base_meta(data, "skills") | {"skills": skills, "questions_per_skill": counts}
    meta["skills_source"] = "src" if data.keywords is None else "llm keywords"
    arrays = {"S": scores, "P": protos.astype(np.float32), "N": data.embedder.embed(skills)}
    return meta, arrays


def _train_answers(data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    from coe.routing.answers import train_answers  # answer reliability and cascade confidence

    return train_answers(data)


TRAINERS: dict[str, Trainer] = {
    "category": train_category,
    "correctness": train_correctness,
    "skills": train_skills,
    "answers": _train_answers,
}


def train(kind: str, data: TrainData) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    if kind not in TRAINERS:
        raise UserError(f"no trainer for artifact kind {kind!r} (known: {', '.join(TRAINERS)})")
    return TRAINERS[kind](data)
