"""Symbolic-MoE's keyword annotation of profiling questions (``coe train --skills llm``).

The paper labels every profiling question with keywords from an LLM: asked ``samples`` times
(temperature 0.7) for 2–5 keywords, keeping those of at most 20 characters named at least twice.
Those keywords are the skills the profile scores (+1/−1 per expert and question), and at inference
the router's LLM annotator maps a query's keywords to the nearest of them by embedding. The
default skills are MMLU-Pro's ``src`` subjects (``--skills src``), which need no calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from coe.config import Settings, load_experts
from coe.errors import ExpertError, UserError
from coe.questions.datasets import Question
from coe.types import Message

__all__ = ["annotate_questions"]


async def annotate_questions(
    questions: Sequence[Question],
    annotator: str,
    settings: Settings,
    *,
    samples: int = 5,
    temperature: float = 0.7,
    max_tokens: int = 48,
    min_repeat: int = 2,
    max_chars: int = 20,
    concurrency: int = 1,
) -> dict[int, list[str]]:
    """``{question_id: keywords}`` (possibly empty) from the ``annotator`` expert, started here."""
    from coe.experts.pool import ExpertPool
    from coe.pipeline import Job, RunParams, Trace, fan_out
    from coe.prompts import PROMPTS
    from coe.routing.data import routing_text
    from routers.symbolic_moe import kept_keywords

    configs = [c for c in load_experts(settings.experts_file) if c.name == annotator]
    if not configs:
        raise UserError(f"unknown annotator expert {annotator!r} (not configured)")
    prompt = PROMPTS["annotate.keywords"]
    run = RunParams(max_tokens=max_tokens, temperature=temperature)
    limit = asyncio.Semaphore(concurrency)
    pool = ExpertPool(configs, settings, bounded=False)
    await pool.start()
    try:

        async def one(question: Question) -> list[str]:
            messages: list[Message] = [
                {"role": "user", "content": prompt.render(question=routing_text(question))}
            ]
            job = Job(pool.client(annotator), messages, "annotate", prompt=prompt.name)
            async with limit:
                try:
                    answers = await fan_out(
                        [job] * samples, run, Trace("annotate"), "annotate", min_answers=1
                    )
                except ExpertError:
                    return []
            return kept_keywords([a.content for a in answers], min_repeat, max_chars)

        found = await asyncio.gather(*(one(q) for q in questions))
    finally:
        await pool.stop()
    return {q.question_id: kws for q, kws in zip(questions, found, strict=True)}
