"""Expert profiles: who answered which benchmark question correctly, at what cost.

A profile holds, per question (by ``question_id``), the training labels (category and the
fine-grained source subject, ``src``, used as a skill label) and each expert's correctness, plus
each expert's mean cost per question. Summaries (per-category accuracy, per-skill +1/−1 scores,
overall accuracy) are computed from those rows, for any subset of questions (cross-validation).

Built from replay files (recorded outputs of real models: the answer is extracted exactly as
``coe eval`` does and the cost counted on the prompt ``coe eval`` builds) or from the
``results.jsonl`` of ``coe eval`` runs (live experts). Routers never read a profile at inference;
trainers turn it into small artifacts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from coe.errors import ConfigError, UserError
from coe.questions.datasets import Question
from coe.questions.extract import extract_choice

__all__ = ["ANSWER_CODE", "Profile", "answer_code", "build_from_replay", "build_from_results", "read_profile"]

#: how ``Profile.answers`` describes one answer, 5 characters: the letter MMLU-Pro's extraction
#: finds (``-`` for none), its form (0 none, 1 fallback, 2 "Answer: X", 3 "the answer is (X)"),
#: whether it quotes the option's text (0/1), whether the letter is an option (0/1), and its
#: length in hundreds of characters (base 36, capped at ``z`` = 3,500 and more)
ANSWER_CODE = "letter, form, quotes, valid, length/100 (base 36)"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def answer_code(response: str, options: Sequence[str]) -> str:
    """The 5-character description of one answer (see ``ANSWER_CODE``)."""
    from coe.aggregators.reliability import answer_features

    f = answer_features(response, options)
    size = _BASE36[min(35, f.length // 100)]
    return f"{f.letter or '-'}{f.form}{int(f.quotes)}{int(f.valid)}{size}"


class Profile(BaseModel):
    """What ``coe profile`` writes (JSON). ``correct[expert]`` is a string of 0/1, one per question."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["coe-profile"] = "coe-profile"
    version: int = 1
    dataset: str
    source: str = Field(description="replay directory or results files it was built from")
    command: str = ""
    experts: list[str]
    question_ids: list[int]
    categories: list[str]
    skills: list[str] = Field(description="fine-grained subject per question (MMLU-Pro `src`); '' if unknown")
    correct: dict[str, str]
    cost_per_query: dict[str, float] = Field(description="mean USD per question")
    answers: dict[str, str] = Field(
        default_factory=dict,
        description="per expert, 5 characters per question describing its answer (see ANSWER_CODE)",
    )
    summary: dict[str, Any] = Field(default_factory=dict, description="for readers; recomputed on load")

    def matrix(self, experts: Sequence[str] | None = None) -> NDArray[np.bool_]:
        """``(questions, experts)`` correctness."""
        names = list(experts or self.experts)
        missing = [n for n in names if n not in self.correct]
        if missing:
            raise UserError(f"profile has no expert(s) {', '.join(missing)} (has: {', '.join(self.experts)})")
        return np.array([[c == "1" for c in self.correct[n]] for n in names], dtype=bool).T

    def index(self) -> dict[int, int]:
        return {qid: i for i, qid in enumerate(self.question_ids)}

    def subset(self, question_ids: Iterable[int]) -> Profile:
        """The same profile over some of its questions (costs are kept: they are per-expert means)."""
        where = self.index()
        rows = [where[q] for q in question_ids if q in where]
        return self.model_copy(
            update={
                "question_ids": [self.question_ids[i] for i in rows],
                "categories": [self.categories[i] for i in rows],
                "skills": [self.skills[i] for i in rows],
                "correct": {n: "".join(s[i] for i in rows) for n, s in self.correct.items()},
                "answers": {n: "".join(s[5 * i : 5 * i + 5] for i in rows) for n, s in self.answers.items()},
                "summary": {},
            }
        )

    def per_category(self, experts: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{category: {expert: accuracy, "n": count}}``."""
        return _grouped(self.categories, self.matrix(experts), list(experts or self.experts), mean=True)

    def per_skill(self, experts: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """Symbolic-MoE profile: ``{skill: {expert: (#right − #wrong), "n": count}}``."""
        return _grouped(self.skills, self.matrix(experts), list(experts or self.experts), mean=False)

    def overall(self, experts: Sequence[str] | None = None) -> dict[str, float]:
        names = list(experts or self.experts)
        acc = self.matrix(names).mean(axis=0) if self.question_ids else np.zeros(len(names))
        return {n: float(a) for n, a in zip(names, acc, strict=True)}

    def summarise(self) -> Profile:
        summary = {
            "n": len(self.question_ids),
            "overall": {k: round(v, 4) for k, v in self.overall().items()},
            "oracle": round(float(self.matrix().any(axis=1).mean()), 4) if self.question_ids else 0.0,
            "per_category": {
                c: {k: round(v, 4) for k, v in row.items()} for c, row in self.per_category().items()
            },
        }
        return self.model_copy(update={"summary": summary})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.summarise().model_dump()
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if self.command:
            sidecar = path.with_suffix(".command")
            sidecar.write_text(
                f"# rebuilds {path.name} (run from the repository root)\n{self.command}\n", encoding="utf-8"
            )


def _grouped(
    labels: Sequence[str], matrix: NDArray[np.bool_], names: list[str], *, mean: bool
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    lab = np.array(labels)
    for label in sorted(set(labels)):
        if not label:
            continue
        rows = matrix[lab == label]
        values = rows.mean(axis=0) if mean else (2 * rows.astype(int) - 1).sum(axis=0)
        out[label] = {"n": float(len(rows)), **{n: float(v) for n, v in zip(names, values, strict=True)}}
    return out


def read_profile(path: Path) -> Profile:
    try:
        return Profile.model_validate_json(path.read_bytes())
    except OSError as err:
        raise UserError(f"cannot read profile {path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(f"{path}:1:1: (profile): {err}") from None


def build_from_replay(
    replay_dir: Path,
    questions: Sequence[Question],
    experts: Sequence[str],
    shots: Mapping[str, Sequence[Question]],
    *,
    dataset: str = "mmlu-pro",
    prompt: str = "cot5",
) -> Profile:
    """Score each expert's recorded responses on the questions every one of them answered."""
    from coe.experts.replay import ReplayBank
    from coe.questions.prompts import build_messages, split_prompt
    from coe.questions.tokens import TokenCounter

    bank = ReplayBank.load(replay_dir)
    have = set.intersection(*(set(bank.question_ids(e)) for e in experts)) if experts else set()
    kept = sorted((q for q in questions if q.question_id in have), key=lambda q: q.question_id)
    if not kept:
        raise UserError(f"the experts share no recorded answer on these questions ({replay_dir})")
    counter = TokenCounter()
    prompt_tokens = [
        counter.count_prompt(
            *split_prompt(build_messages(q, shots.get(q.category, ()), prompt)[0]["content"])  # type: ignore[arg-type]
        )
        for q in kept
    ]
    correct: dict[str, str] = {}
    answers: dict[str, str] = {}
    cost: dict[str, float] = {}
    for name in experts:
        p_price, c_price = bank.price(name)
        total = 0.0
        bits = []
        codes = []
        for q, tokens in zip(kept, prompt_tokens, strict=True):
            response = bank.response(name, q.question_id)
            bits.append("1" if extract_choice(response) == q.answer else "0")
            codes.append(answer_code(response, q.options))
            total += (tokens * p_price + counter.count(response) * c_price) / 1e6
        correct[name] = "".join(bits)
        answers[name] = "".join(codes)
        cost[name] = total / len(kept)
    return Profile(
        dataset=dataset,
        source=str(replay_dir),
        experts=list(experts),
        question_ids=[q.question_id for q in kept],
        categories=[q.category for q in kept],
        skills=[q.src for q in kept],
        correct=correct,
        cost_per_query=cost,
        answers=answers,
    )


def build_from_results(
    results: Sequence[Path],
    questions: Sequence[Question] = (),
    experts: Sequence[str] = (),
    *,
    dataset: str = "mmlu-pro",
) -> Profile:
    """From ``coe eval`` runs: each row's ``expert_predictions`` and ``expert_costs``.

    Several runs may be merged (say one per expert); a question is kept when every expert has a
    prediction for it. ``questions`` supply skill labels (``src``) by question_id when given.
    """
    rows: dict[int, dict[str, Any]] = {}
    for path in results:
        for line in _lines(path):
            entry = rows.setdefault(int(line["question_id"]), {"preds": {}, "costs": {}})
            entry.update(category=line["category"], answer=line["answer"])
            entry["preds"].update(line.get("expert_predictions") or {})
            entry["costs"].update(line.get("expert_costs") or {})
    names = list(experts) or sorted({n for r in rows.values() for n in r["preds"]})
    kept = sorted(qid for qid, r in rows.items() if all(n in r["preds"] for n in names))
    if not kept or not names:
        raise UserError("no question has a prediction from every expert in these results")
    src = {q.question_id: q.src for q in questions}
    return Profile(
        dataset=dataset,
        source=", ".join(str(p) for p in results),
        experts=names,
        question_ids=kept,
        categories=[rows[q]["category"] for q in kept],
        skills=[src.get(q, "") for q in kept],
        correct={
            n: "".join("1" if rows[q]["preds"][n] == rows[q]["answer"] else "0" for q in kept) for n in names
        },
        cost_per_query={n: sum(rows[q]["costs"].get(n, 0.0) for q in kept) / len(kept) for n in names},
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    from coe.eval.results import read_results

    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise UserError(f"no results file {path}")
    return list(read_results(path).values())
