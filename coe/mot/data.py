"""MMLU-Pro dev questions as zero-shot multiple choice for MoT training and evaluation.

Dev is the questions every recorded model of the replay outputs answered (``outputs/*.jsonl.gz``),
as for the routers' profiles. A seeded shuffle of dev puts its first 10% aside for evaluation, so
the evaluation slice depends only on the seed, never on how much is trained.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coe.errors import UserError
from coe.mot.experts import LETTERS, FrozenExpert
from coe.questions.datasets import Question, load_mmlu_pro
from coe.types import Message

INSTRUCTION = "The following is a multiple choice question. Answer with the letter of the correct option.\n\n"
#: what each expert's answer starts with; the next token is the letter
ANSWER_LEAD = {"chat": "The answer is (", "completions": " The answer is ("}


def dev_ids(outputs_dir: Path) -> set[int]:
    """Question ids every ``outputs_dir/*.jsonl.gz`` holds."""
    files = sorted(outputs_dir.glob("*.jsonl.gz"))
    if not files:
        raise UserError(f"no recorded outputs (*.jsonl.gz) in {outputs_dir}")
    common: set[int] | None = None
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            ids = {int(json.loads(line)["question_id"]) for line in lines if line.strip()}
        common = ids if common is None else common & ids
    return common or set()


def mcq_messages(question: Question) -> list[Message]:
    options = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(question.options))
    return [{"role": "user", "content": f"{INSTRUCTION}Question:\n{question.question}\nOptions:\n{options}"}]


@dataclass(frozen=True)
class Example:
    """One question, tokenised by every expert: prompt ids (ending with the answer lead) and the
    gold letter's token per expert."""

    question_id: int
    messages: list[Message]
    answer: str
    n_options: int
    prompt_ids: tuple[tuple[int, ...], ...]
    answer_ids: tuple[int, ...]


def letter_ids(expert: FrozenExpert) -> list[int]:
    """The token of each letter right after the answer lead (one token each)."""
    out = []
    for letter in LETTERS:
        ids = expert.text_ids(letter)
        if len(ids) != 1:
            raise UserError(f"MoT expert {expert.name}: letter {letter!r} is {len(ids)} tokens")
        out.append(ids[0])
    return out


def make_example(question: Question, experts: Sequence[FrozenExpert]) -> Example:
    messages = mcq_messages(question)
    prompts = tuple(tuple(e.prompt_ids(messages) + e.text_ids(ANSWER_LEAD[e.spec.format])) for e in experts)
    answers = tuple(letter_ids(e)[LETTERS.index(question.answer)] for e in experts)
    return Example(question.question_id, messages, question.answer, len(question.options), prompts, answers)


@dataclass(frozen=True)
class Split:
    train: list[Example]
    eval: list[Example]


def load_split(
    data_path: Path,
    outputs_dir: Path,
    experts: Sequence[FrozenExpert],
    *,
    seed: int,
    max_prompt_tokens: int = 160,
    eval_fraction: float = 0.1,
    train_limit: int | None = None,
    eval_limit: int | None = None,
) -> Split:
    """Dev questions whose prompts fit ``max_prompt_tokens`` for every expert, split by ``seed``;
    the first ``train_limit`` / ``eval_limit`` that fit of each side's seeded order."""
    ids = dev_ids(outputs_dir)
    questions = sorted(
        (q for q in load_mmlu_pro(data_path) if q.question_id in ids), key=lambda q: q.question_id
    )
    if not questions:
        raise UserError(f"no dev questions of {outputs_dir} in {data_path}")
    random.Random(seed).shuffle(questions)
    cut = max(1, round(eval_fraction * len(questions)))
    held, rest = questions[:cut], questions[cut:]

    def fitting(chosen: list[Question], limit: int | None) -> list[Example]:
        out: list[Example] = []
        for q in chosen:
            if limit is not None and len(out) >= limit:
                break
            example = make_example(q, experts)
            if max(len(p) for p in example.prompt_ids) <= max_prompt_tokens:
                out.append(example)
        return out

    return Split(fitting(rest, train_limit), fitting(held, eval_limit))
