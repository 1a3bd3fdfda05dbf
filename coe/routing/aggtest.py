"""Symbolic-MoE's synthetic aggregation test: which expert aggregates best, per task.

For each profiling question the candidate aggregator reads three real recorded responses, one
right and two wrong, from three different experts (picked and shuffled with a generator seeded by
``seed`` and the question), and writes the final answer with Symbolic-MoE's synthesis prompt; it
scores when MMLU-Pro's extraction finds the gold letter there. The expert with the best score is
the task's aggregator (ties to the first listed). Questions without one right and two wrong
responses are skipped.

The responses come from a profiling run: a replay directory (``<model>.jsonl.gz``, every model in
it) or ``coe eval`` results, whose rows keep each live expert's own answer (``responses``). They
need not be the candidate aggregators' own: the test asks how well an expert finds the right
answer among real ones.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coe.config import Settings, load_experts
from coe.errors import CoeError, UserError
from coe.questions.datasets import Question
from coe.questions.extract import extract_choice
from coe.questions.prompts import build_messages
from coe.types import Candidate

__all__ = ["aggregation_test", "recorded_responses", "synthetic_candidates"]

Responses = dict[int, dict[str, str]]


def recorded_responses(source: Path, question_ids: Sequence[int]) -> Responses:
    """``{question_id: {expert: response}}`` from a replay directory or ``coe eval`` results."""
    wanted = set(question_ids)
    out: Responses = {}
    if source.is_dir() and any(source.glob("*.jsonl.gz")):
        from coe.experts.replay import ReplayBank

        bank = ReplayBank.load(source)
        for name in bank.names:
            for qid in bank.question_ids(name) & wanted:
                out.setdefault(qid, {})[name] = bank.response(name, qid)
        return out
    from coe.eval.results import read_results

    path = source / "results.jsonl" if source.is_dir() else source
    if not path.is_file():
        raise UserError(f"no recorded responses in {source} (a replay directory or coe eval results)")
    for qid, row in read_results(path).items():
        if qid in wanted and row.get("responses"):
            out[qid] = dict(row["responses"])
    return out


def synthetic_candidates(
    question: Question, responses: Mapping[str, str], seed: int = 0
) -> list[Candidate] | None:
    """One right and two wrong responses from three different experts, shuffled with
    ``Random(f"{seed}:{question_id}")``; None when the responses hold no such three."""
    right = sorted(e for e, text in responses.items() if extract_choice(text) == question.answer)
    wrong = sorted(e for e in responses if e not in right)
    if not right or len(wrong) < 2:
        return None
    rng = random.Random(f"{seed}:{question.question_id}")
    picks = [rng.choice(right), *rng.sample(wrong, 2)]
    rng.shuffle(picks)
    return [Candidate(name, responses[name]) for name in picks]


async def aggregation_test(
    experts: Sequence[str],
    questions: Sequence[Question],
    responses: Responses,
    settings: Settings,
    *,
    seed: int = 0,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Run the test on live experts (started here and stopped after); return scores and the choice."""
    from coe.aggregators import AggregatorContext
    from coe.aggregators.synthesize import SynthesizeAggregator, SynthesizeParams
    from coe.experts.pool import ExpertPool
    from coe.pipeline import RunParams

    cases = [
        (q, c) for q in questions if (c := synthetic_candidates(q, responses.get(q.question_id, {}), seed))
    ]
    if not cases:
        raise UserError("no profiling question has one right and two wrong recorded responses")
    configs = [c for c in load_experts(settings.experts_file) if c.name in experts]
    pool = ExpertPool(configs, settings, bounded=False)
    await pool.start()
    try:

        async def one(expert: str, question: Question, candidates: list[Candidate]) -> bool:
            params = SynthesizeParams.model_validate({"expert": expert})
            aggregator = SynthesizeAggregator(params, AggregatorContext(pool, node="aggregation-test"))
            messages = build_messages(question, (), "cot0")
            try:
                result = await aggregator.aggregate(messages, candidates, RunParams(max_tokens=max_tokens))
            except CoeError:
                return False
            return extract_choice(result.content) == question.answer

        names = [c.name for c in configs]
        outcomes = await asyncio.gather(*(one(e, q, c) for e in names for q, c in cases))
    finally:
        await pool.stop()
    n = len(cases)
    scores = {e: sum(outcomes[i * n : (i + 1) * n]) / n for i, e in enumerate(names)}
    chosen = max(names, key=lambda e: (scores[e], -names.index(e)))
    return {
        "chosen": chosen,
        "scores": scores,
        "questions": n,
        "method": "one right and two wrong recorded responses from different experts",
        "seed": seed,
    }
