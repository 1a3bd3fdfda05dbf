"""Calibrated answer reliability: what a service can observe about each answer, how far to trust
it, and how sure to be of the answer several of them point to.

Every answer to a multiple-choice question is reduced to :class:`AnswerFeatures`: the letter
MMLU-Pro's extraction finds and *how* it was found (``strict``: "the answer is (X)", the format
the prompt asks for; ``colon``: "Answer: X"; ``fallback``: a lone letter somewhere in the text;
``none``), whether the letter names one of the question's options, whether the answer quotes
that option's text, and its length. Nothing else is read: no dataset field, only the messages
and the answers.

A :class:`Reliability` model (trained by ``coe train``, artifact kind ``answers``; see
``coe.routing.answers``) holds each expert's chance of being right per category and per answer
form, smoothed towards its overall rate per form. For one query (category probabilities from the
router's classifier) an answer's weight is the log-odds ``log(p·(K−1)/(1−p))`` of that chance
with K options: the weight of an independent voter in an optimal weighted majority. Letter
scores add the weights of the answers naming each letter; ``softmax`` over the K letters is the
posterior of each letter. :meth:`Reliability.confidence` is a logistic model over features of the
leading letter (its posterior, agreement, form, quote, length, the router's confidence, how many
answers so far), fitted on dev to say how often that leader is right.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coe.questions.extract import LETTERS, _answer_colon, _last_lone_letter
from coe.types import Messages

__all__ = [
    "CONFIDENCE_FEATURES",
    "FORMS",
    "AnswerFeatures",
    "Reliability",
    "Tally",
    "answer_features",
    "backing",
    "question_options",
]

#: how an answer's letter was found, weakest first
FORMS = ("none", "fallback", "colon", "strict")
_STRICT = re.compile(r"answer is \(?([A-J])\)?")
_OPTION = re.compile(r"^([A-J])\. (.*)$", re.M)
_WORDS = re.compile(r"[^0-9a-z.\-/]+")
#: the confidence model's inputs, in order (see :meth:`Reliability.features`)
CONFIDENCE_FEATURES = (
    "leader_logit",
    "answers",
    "agree_share",
    "strict",
    "quotes",
    "log_length",
    "route_confidence",
    "valid",
    "best_weight",
)


@dataclass(frozen=True, slots=True)
class AnswerFeatures:
    """What one answer shows: its letter (or None), form (index into ``FORMS``), whether it
    quotes the chosen option's text and whether that letter is an option at all, its length."""

    letter: str | None
    form: int
    quotes: bool
    valid: bool
    length: int


def _norm(text: str) -> str:
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def question_options(messages: Messages) -> list[str]:
    """The options of the last question in the last user message (``A. ...`` lines after
    ``Options:``), or ``[]``."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        return []
    text = users[-1]
    start = text.rfind("\nOptions:\n")
    if start < 0:
        return []
    options: list[str] = []
    for match in _OPTION.finditer(text, start):
        if match.group(1) != LETTERS[len(options)]:
            break
        options.append(match.group(2))
    return options


def answer_features(text: str, options: Sequence[str]) -> AnswerFeatures:
    """The features of one answer to a question with these options (MMLU-Pro's extraction)."""
    found = _STRICT.search(text)
    if found:
        letter: str | None = found.group(1)
        form = 3
    elif (letter := _answer_colon(text)) is not None:
        form = 2
    elif (letter := _last_lone_letter(text)) is not None:
        form = 1
    else:
        form = 0
    index = LETTERS.index(letter) if letter else -1
    valid = letter is not None and (not options or index < len(options))
    quotes = False
    if valid and options:
        option = _norm(options[index])
        quotes = bool(option) and option in _norm(text)
    return AnswerFeatures(letter, form, quotes, valid, len(text))


@dataclass(frozen=True, slots=True)
class Tally:
    """Letter scores over answers, the leader and its posterior."""

    scores: dict[str, float]
    leader: str | None
    posterior: float
    weights: list[float]


def backing(answers: Sequence[tuple[str, AnswerFeatures]], letter: str | None) -> int:
    """The answer to pass on for ``letter``: of those naming it, the best-stated (strict form
    first), then the first; 0 when none names it."""
    named = [i for i, (_, f) in enumerate(answers) if f.letter == letter and letter is not None]
    return max(named, key=lambda i: (answers[i][1].form, -i)) if named else 0


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class Reliability:
    """Per-expert reliability by category and answer form, and the confidence model.

    ``table`` is experts × categories × forms of probabilities; ``coef`` the confidence model's
    weights (``CONFIDENCE_FEATURES`` then the intercept)."""

    def __init__(
        self, experts: Sequence[str], labels: Sequence[str], table: NDArray[Any], coef: Sequence[float]
    ) -> None:
        self.experts = list(experts)
        self.labels = list(labels)
        self.table = np.asarray(table, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self._index = {e: i for i, e in enumerate(self.experts)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], table: NDArray[Any]) -> Reliability:
        return cls(meta["experts"], meta["labels"], table, meta["confidence"]["coef"])

    def knows(self, expert: str) -> bool:
        return expert in self._index

    def chance(self, expert: str, probs: NDArray[Any], form: int) -> float:
        """This expert's chance to be right when it answers in ``form``, for a query with these
        category probabilities (an unknown expert: a coin with its letters' odds)."""
        if expert not in self._index:
            return 0.5
        return float(np.dot(probs, self.table[self._index[expert], :, form]))

    def weight(self, expert: str, probs: NDArray[Any], form: int, options: int) -> float:
        """The answer's vote: log-odds of being right against any one other letter."""
        k = max(options, 2)
        p = min(max(self.chance(expert, probs, form), 1e-3), 1 - 1e-3)
        return math.log(p * (k - 1) / (1 - p))

    def tally(
        self,
        answers: Sequence[tuple[str, AnswerFeatures]],
        probs: NDArray[Any],
        options: int,
        scale: Sequence[float] | None = None,
    ) -> Tally:
        """Letter scores (``scale`` multiplies each answer's weight: a route's draw counts)."""
        k = max(options, 2)
        scores: dict[str, float] = {}
        weights = []
        for i, (expert, feats) in enumerate(answers):
            w = self.weight(expert, probs, feats.form, k) if feats.letter else 0.0
            w *= scale[i] if scale is not None else 1.0
            weights.append(w)
            if feats.letter is not None:
                scores[feats.letter] = scores.get(feats.letter, 0.0) + w
        if not scores:
            return Tally(scores, None, 1.0 / k, weights)
        top = max(scores.values())
        # first listed answer whose letter has the top score
        leader = next(f.letter for _, f in answers if f.letter is not None and scores[f.letter] == top)
        silent = max(k - len(scores), 0)
        norm = sum(math.exp(s - top) for s in scores.values()) + silent * math.exp(-top)
        return Tally(scores, leader, 1.0 / norm, weights)

    def features(
        self,
        answers: Sequence[tuple[str, AnswerFeatures]],
        probs: NDArray[Any],
        options: int,
    ) -> tuple[Tally, list[float]]:
        """The tally of these answers and the confidence model's inputs for its leader."""
        tally = self.tally(answers, probs, options)
        backing = [
            (f, w) for (_, f), w in zip(answers, tally.weights, strict=True) if f.letter == tally.leader
        ]
        n = len(answers)
        if tally.leader is None or not backing:
            return tally, [_logit(tally.posterior), n, 0.0, 0.0, 0.0, 0.0, float(np.max(probs)), 0.0, 0.0]
        first = backing[0][0]
        return tally, [
            _logit(tally.posterior),
            float(n),
            len(backing) / n,
            float(max(f.form for f, _ in backing) == 3),
            float(any(f.quotes for f, _ in backing)),
            math.log1p(first.length) / 8,
            float(np.max(probs)),
            float(first.valid),
            max(w for _, w in backing),
        ]

    def confidence(self, inputs: Sequence[float]) -> float:
        """The chance that the leader is right (the fitted logistic model)."""
        z = float(np.dot(self.coef[:-1], inputs) + self.coef[-1])
        return 1.0 / (1.0 + math.exp(-z))
