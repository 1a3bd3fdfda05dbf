"""Symbolic-MoE's two skill annotators on a sample of dev questions: the paper's LLM annotator
(a live expert lists 2–5 skills, 5 samples, repeated keywords kept, each mapped to the nearest
profile skill by name) against the embedding annotator (the nearest profile skills of the query).

    .venv/bin/python benchmarks/annotators.py [--expert smollm2] [--n 14]

Scores each by how often the question's own skill label (its MMLU-Pro ``src``, as a keyword) is
among the skills it names, and times it. Questions: one per category from the committed slice.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from coe.config import Settings, load_experts
from coe.experts.pool import ExpertPool
from coe.questions.prompts import build_messages
from coe.routing.data import load_questions
from coe.routing.train import skill_name
from routers import ROUTERS, RouterContext, build_router
from routers.embedding import query_text
from routers.symbolic_moe import SymbolicMoERouter

REPO = Path(__file__).resolve().parents[1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expert", default="smollm2")
    parser.add_argument("--n", type=int, default=14)
    parser.add_argument("--artifact", default=str(REPO / "config/routers/mmlu-pro-small8-skills.json"))
    args = parser.parse_args()
    questions = sorted(
        load_questions(REPO / "tests/data/mmlu_pro/test_slice.jsonl").values(), key=lambda q: q.question_id
    )
    sample, seen = [], set()
    for q in questions:
        if q.category not in seen and len(sample) < args.n:
            seen.add(q.category)
            sample.append(q)
    settings = Settings.load()
    pool = ExpertPool([c for c in load_experts(settings.experts_file) if c.name == args.expert], settings)
    await pool.start()
    try:
        context = RouterContext([], REPO, pool)
        routers = {
            "embedding": build_router(ROUTERS.get("symbolic-moe"), {"artifact": args.artifact}, context),
            f"llm ({args.expert})": build_router(
                ROUTERS.get("symbolic-moe"), {"artifact": args.artifact, "annotator": args.expert}, context
            ),
        }
        for label, router in routers.items():
            assert isinstance(router, SymbolicMoERouter)
            hits, found, started = 0, 0, time.perf_counter()
            for q in sample:
                messages = build_messages(q, (), "cot0")
                if label == "embedding":
                    skills = await router.annotate(messages)
                else:
                    skills = await router.annotate_llm(query_text(messages), router.params)  # type: ignore[arg-type]
                    found += bool(skills)
                names = {router.skills[i] for i in skills}
                hits += skill_name(q.src) in names
            per_q = (time.perf_counter() - started) / len(sample)
            extra = f", repeated keywords on {found}/{len(sample)}" if label != "embedding" else ""
            print(
                f"{label}: own skill named on {hits}/{len(sample)} questions{extra}; {per_q:.2f} s/question"
            )
    finally:
        await pool.stop()


if __name__ == "__main__":
    asyncio.run(main())
