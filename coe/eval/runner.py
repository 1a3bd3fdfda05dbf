"""``coe eval``: run a graph over a benchmark and write results, summary, report and plots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coe.config import Settings, load_experts
from coe.errors import ExpertError, UserError
from coe.eval.results import ResultWriter, read_results, summarize, write_json
from coe.experts.pool import ExpertPool
from coe.graph.catalog import resolve
from coe.graph.compile import GraphPipeline
from coe.graph.loader import load_graph
from coe.pipeline import RunParams, RunResult
from coe.questions.datasets import Question
from coe.questions.extract import extract_choice
from coe.types import Messages

#: calls whose answer is an expert's own answer to the question (not a judge's, an aggregator's...)
ANSWER_ROLES = frozenset({"answer", "propose", None})
#: how a dataset is named in the task SMoA's role writer is given
TASKS = {"mmlu-pro": "MMLU-Pro", "gpqa": "GPQA (graduate-level science)", "csv": "benchmark"}


@dataclass(frozen=True, slots=True)
class EvalOptions:
    graph: str
    dataset: Literal["mmlu-pro", "gpqa", "csv"]
    out: Path
    data_path: str | None = None
    split: str | None = None
    limit: int | None = None
    experts: tuple[str, ...] = ()
    replay_dir: Path | None = None
    concurrency: int = 16
    prompt: str | None = None
    shots_path: Path | None = None
    max_tokens: int | None = None
    engine: Literal["direct", "langgraph"] = "direct"
    seed: int = 0
    progress: bool = True
    batch: bool = False


def role_usage(calls: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Calls, tokens, cost and latency per role (failed calls count as calls, with no usage)."""
    out: dict[str, dict[str, float | int]] = {}
    for call in calls:
        entry = out.setdefault(
            str(call.get("role") or "answer"),
            {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "latency_s": 0.0},
        )
        entry["calls"] += 1
        if "error" not in call:
            for key in ("prompt_tokens", "completion_tokens", "cost", "latency_s"):
                entry[key] += call[key]
    return {
        role: {**v, "cost": round(v["cost"], 10), "latency_s": round(v["latency_s"], 4)}
        for role, v in out.items()
    }


def question_row(
    question: Question, result: RunResult | None, error: str | None = None, keep: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """One line of results.jsonl; ``keep``: experts whose own answers are stored (``responses``,
    for the aggregation test; replayed experts' are in their replay files)."""
    if result is None:
        return {
            "question_id": question.question_id,
            "category": question.category,
            "answer": question.answer,
            "prediction": None,
            "correct": False,
            "experts": [],
            "expert_predictions": {},
            "expert_costs": {},
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "latency_s": 0.0},
            "roles": {},
            "error": error,
        }
    calls = [c for c in result.trace.calls if "error" not in c]
    first: dict[str, dict[str, Any]] = {}
    for call in calls:  # an expert's first answer of its own (later rounds have seen others')
        if call.get("role") in ANSWER_ROLES:
            first.setdefault(call["expert"], call)
    answers = {name: extract_choice(c["answer"]) for name, c in first.items()}
    costs = {name: c["cost"] for name, c in first.items()}
    prediction = extract_choice(result.content)
    return {
        "question_id": question.question_id,
        "category": question.category,
        "answer": question.answer,
        "prediction": prediction,
        "correct": prediction == question.answer,
        "experts": [c["expert"] for c in result.trace.calls],
        "expert_predictions": answers,
        "expert_costs": costs,
        "usage": result.trace.usage.as_dict(),
        "roles": role_usage(result.trace.calls),
        **({"responses": {n: c["answer"] for n, c in first.items() if n in keep}} if keep else {}),
    }


class EvalRun:
    """One evaluation: questions, the pool of experts (live and replayed), the compiled graph."""

    def __init__(self, options: EvalOptions, settings: Settings) -> None:
        from coe.questions.tokens import TokenCounter

        self.options = options
        self.settings = settings
        self.counter = TokenCounter()
        self.loaded = load_graph(resolve(options.graph, settings.graphs_dir), graphs_dir=settings.graphs_dir)
        self.bank = None
        if options.replay_dir is not None:
            from coe.experts.replay import ReplayBank

            self.bank = ReplayBank.load(options.replay_dir)
        configs = {c.name: c for c in load_experts(settings.experts_file)}
        spec_pool = self.loaded.spec.experts
        self.pool_names = list(options.experts) or (
            list(spec_pool) if isinstance(spec_pool, list) else list(configs)
        )
        needed = list(dict.fromkeys([*self.pool_names, *(name for _, name in self.loaded.expert_refs())]))
        replayed = set(self.bank.names) if self.bank else set()
        unknown = [n for n in needed if n not in replayed and n not in configs]
        if unknown:
            raise UserError(
                f"unknown expert(s): {', '.join(unknown)} (not configured"
                + (f", not in {options.replay_dir})" if options.replay_dir else "; no --replay-dir)")
            )
        self.replayed = [n for n in needed if n in replayed]
        self.live = [n for n in needed if n not in replayed]
        self.pool = ExpertPool([configs[n] for n in self.live], settings, bounded=False)
        for name in self.replayed:
            assert self.bank is not None
            self.pool.add(self.bank.expert(name, self.counter))
        from coe.graph.cache import open_cache

        self.pipeline = GraphPipeline(
            self.loaded,
            self.pool,
            self.pool_names,
            engine=options.engine,
            cache=open_cache(settings.redis_url, settings.state_dir),
        )
        self.callable = [n for n in needed if n in self.pipeline.experts or n in self.pool_names]

    def questions(self) -> tuple[list[Question], dict[str, list[Question]]]:
        from coe.eval.load import load_questions

        questions, shots = load_questions(self.options)
        if self.bank is not None:
            self.bank.index_questions(questions)
            for name in self.replayed:
                if name in self.callable:
                    have = self.bank.question_ids(name)
                    questions = [q for q in questions if q.question_id in have]
        questions.sort(key=lambda q: q.question_id)
        if self.options.limit is not None:
            questions = questions[: self.options.limit]
        return questions, shots

    def messages(self, question: Question, shots: dict[str, list[Question]]) -> Messages:
        from coe.questions.prompts import build_messages

        style = self.options.prompt or ("gpqa" if self.options.dataset == "gpqa" else "cot5")
        return build_messages(question, shots.get(question.category, ()), style)  # type: ignore[arg-type]

    def metadata(self, question: Question) -> dict[str, Any]:
        """The request's metadata: what replay needs, and the task (dataset and category)."""
        task = f"{TASKS[self.options.dataset]} multiple-choice questions about {question.category}"
        return {**question.metadata(), "task": task}

    async def answer(self, question: Question, shots: dict[str, list[Question]]) -> dict[str, Any]:
        params = RunParams(max_tokens=self.options.max_tokens, metadata=self.metadata(question))
        try:
            result = await self.pipeline.run(self.messages(question, shots), params)
        except ExpertError as err:
            return question_row(question, None, str(err))
        return question_row(question, result, keep=frozenset(self.live))


async def _drain(
    run: EvalRun,
    todo: Sequence[Question],
    shots: dict[str, list[Question]],
    writer: ResultWriter,
    rows: dict[int, dict[str, Any]],
) -> None:
    from tqdm import tqdm

    queue: asyncio.Queue[Question] = asyncio.Queue()
    for question in todo:
        queue.put_nowait(question)
    bar = tqdm(total=len(todo), unit="q", disable=not run.options.progress, smoothing=0.05)

    async def worker() -> None:
        while not queue.empty():
            question = queue.get_nowait()
            row = await run.answer(question, shots)
            writer.write(row)
            rows[question.question_id] = row
            bar.update()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, run.options.concurrency))))
    finally:
        bar.close()


async def run_eval(options: EvalOptions, settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    run = EvalRun(options, settings)
    questions, shots = run.questions()
    if not questions:
        raise UserError("no questions to evaluate (do the replayed experts share any question?)")
    options.out.mkdir(parents=True, exist_ok=True)
    results_path = options.out / "results.jsonl"
    wanted = {q.question_id for q in questions}
    rows = {qid: row for qid, row in read_results(results_path).items() if qid in wanted}
    todo = [q for q in questions if q.question_id not in rows]
    batch: dict[str, Any] | None = None
    if options.batch:
        from coe.eval.batched import drain_batch

        with ResultWriter(results_path) as writer:
            batch = await drain_batch(run, todo, shots, writer, rows)
        loads = {name: e["model_loads"] for name, e in (batch["experts"] if batch else {}).items()}
    else:
        try:
            await run.pool.start()
            with ResultWriter(results_path) as writer:
                await _drain(run, todo, shots, writer, rows)
        finally:
            await run.pool.stop()
        loads = {name: launcher.stats.loads for name, launcher in run.pool.launchers.items()}
    summary = summarize(
        rows.values(),
        graph=run.loaded.name,
        dataset=options.dataset,
        split=options.split or ("main" if options.dataset == "gpqa" else "test"),
        experts=run.callable,
        tokenizer=run.counter.name,
        model_loads={name: loads.get(name, 0) for name in run.callable},
        wall_s=round(time.monotonic() - started, 3),
    )
    summary["errors"] = sum(1 for r in rows.values() if r.get("error"))
    if batch is not None:
        summary["batch"] = {k: batch[k] for k in ("id", "max_resident", "calls", "experts", "dead_letters")}
    write_json(options.out / "summary.json", summary)
    from coe.eval.report import write_report

    await write_report(run, questions, shots, rows, summary, options.out)
    return summary
