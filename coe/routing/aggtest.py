"""Symbolic-MoE's synthetic aggregation test: which expert aggregates best, per task.

For each profiling question the candidate aggregator sees three answers, one right and two wrong
(the right letter and two other letters of the question, each stated as a short answer, in a
seeded order), and writes the final answer; it scores when MMLU-Pro's extraction finds the gold
letter there. The expert with the best score is the task's aggregator (ties to the first listed).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from coe.config import Settings, load_experts
from coe.errors import CoeError
from coe.eval.datasets import Question
from coe.eval.extract import LETTERS, extract_choice
from coe.eval.prompts import build_messages
from coe.types import Candidate

__all__ = ["aggregation_test", "synthetic_candidates"]


def synthetic_candidates(question: Question, seed: int = 0) -> list[Candidate]:
    """One right and two wrong short answers, shuffled with ``Random(f"{seed}:{question_id}")``."""
    rng = random.Random(f"{seed}:{question.question_id}")
    letters = LETTERS[: len(question.options)]
    wrong = rng.sample([x for x in letters if x != question.answer], 2)
    picks = [question.answer, *wrong]
    rng.shuffle(picks)
    return [
        Candidate(f"answer-{i}", f"{question.options[LETTERS.index(x)]} is correct, so the answer is ({x}).")
        for i, x in enumerate(picks)
    ]


async def aggregation_test(
    experts: Sequence[str], questions: Sequence[Question], settings: Settings, max_tokens: int = 128
) -> dict[str, Any]:
    """Run the test on live experts (started here and stopped after); return scores and the choice."""
    from coe.aggregators.synthesize import SynthesizeAggregator
    from coe.experts.pool import ExpertPool

    configs = [c for c in load_experts(settings.experts_file) if c.name in experts]
    pool = ExpertPool(configs, settings)
    await pool.start()
    try:

        async def one(expert: str, question: Question) -> bool:
            aggregator = SynthesizeAggregator(expert=expert, lookup=pool, max_tokens=max_tokens)
            messages = build_messages(question, (), "cot0")
            try:
                result = await aggregator.aggregate(messages, synthetic_candidates(question))
            except CoeError:
                return False
            return extract_choice(result.content) == question.answer

        names = [c.name for c in configs]
        jobs = [one(e, q) for e in names for q in questions]
        outcomes = await asyncio.gather(*jobs)
    finally:
        await pool.stop()
    n = len(questions)
    scores = {e: sum(outcomes[i * n : (i + 1) * n]) / n for i, e in enumerate(names)}
    chosen = max(names, key=lambda e: (scores[e], -names.index(e)))
    return {"chosen": chosen, "scores": scores, "questions": n, "method": "one right, two wrong answers"}
