"""``coe train``: train the router a graph names from a profile, or cross-validate it.

The graph's route node names the router and the artifact it reads; ``coe train`` writes that
artifact (JSON, arrays, and a ``.command`` sidecar with this command line), or with ``--cv K``
trains on K−1 folds (``question_id % K``) and evaluates the graph on the held-out fold.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coe.config import Settings
    from coe.graph.loader import LoadedGraph
    from coe.questions.datasets import Question
    from coe.routing.train import TrainData


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mode", nargs="?", choices=["router", "mot"], default="router", help="a graph's router, or MoT"
    )
    parser.add_argument("--graph", help="graph name (path under graphs/) or file (router: required)")
    parser.add_argument("--profile", type=Path, help="profile JSON (coe profile) (router: required)")
    parser.add_argument("--data-path", help="the profile's questions (MMLU-Pro parquet/JSONL)")
    parser.add_argument("--out", type=Path, help="artifact to write (default: the one the graph names)")
    parser.add_argument("--max-tokens", type=int, default=256, help="embedder input limit (word pieces)")
    parser.add_argument(
        "--embedder",
        choices=["minilm", "static"],
        default="minilm",
        help="query embedding: all-MiniLM-L6-v2, or its distilled static table (fast routing)",
    )
    parser.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation instead of training")
    parser.add_argument("--cv-out", type=Path, default=Path("runs/cv"), help="where folds and cv.json go")
    parser.add_argument("--replay-dir", type=Path, help="replayed experts for --cv")
    parser.add_argument("--shots-path", type=Path, help="validation split for --cv's 5-shot prompts")
    parser.add_argument(
        "--aggregation-test",
        type=int,
        metavar="N",
        help="symbolic-moe over live experts: pick the task's aggregator on N profiling questions",
    )
    parser.add_argument(
        "--responses",
        type=Path,
        help="recorded responses for --aggregation-test: a replay dir or coe eval results "
        "(default: the profile's source)",
    )
    parser.add_argument(
        "--aggregation-max-tokens", type=int, default=256, help="--aggregation-test: the aggregator's answer"
    )
    parser.add_argument(
        "--skills",
        choices=["src", "llm"],
        default="src",
        help="symbolic-moe skills: MMLU-Pro's src subjects, or keywords from an LLM (--annotator)",
    )
    parser.add_argument("--annotator", help="--skills llm: the expert that names keywords")
    parser.add_argument("--samples", type=int, default=5, help="--skills llm: answers per question")
    parser.add_argument("--annotator-max-tokens", type=int, default=48, help="--skills llm: per answer")
    parser.add_argument("--config", type=Path, help="settings file")
    from coe.mot.cli import add_arguments as add_mot_arguments

    add_mot_arguments(parser)


def _require_router_arguments(args: argparse.Namespace) -> None:
    names = ("graph", "profile", "data_path")
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        from coe.errors import UserError

        raise UserError(f"training a router needs {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    if args.mode == "mot":
        from coe.mot.cli import run as run_mot

        return run_mot(args)
    _require_router_arguments(args)
    return _train_router(args)


def _train_router(args: argparse.Namespace) -> int:
    from coe.config import Settings
    from coe.errors import UserError
    from coe.graph.catalog import resolve
    from coe.routing import command_line
    from coe.routing.data import load_questions, read_graph, route_node, train_data
    from coe.routing.profiles import read_profile

    settings = Settings.load(args.config)
    loaded = read_graph(resolve(args.graph, settings.graphs_dir), settings.graphs_dir)
    info = route_node(loaded)
    profile = read_profile(args.profile)
    pool = loaded.spec.experts if isinstance(loaded.spec.experts, list) else profile.experts
    experts = [e for e in profile.experts if e in pool]
    if not experts:
        raise UserError(f"the profile holds none of the graph's experts ({', '.join(pool)})")
    if args.cv is None and not info.kind:
        raise UserError(f"graph {loaded.name!r}: its router ({info.router or 'none'}) learns nothing")
    questions = load_questions(args.data_path)
    data = train_data(
        profile.subset(profile.question_ids),
        questions,
        experts,
        args.max_tokens,
        progress=True,
        embedder_name=args.embedder,
    )
    if args.skills == "llm":
        data = _with_keywords(args, data, questions, settings)
    if args.cv is not None:
        return _cross_validate(args, loaded, data, questions, settings)
    from coe.routing.train import train
    from routers.artifacts import write_artifact

    out = args.out or info.artifact
    if out is None:
        raise UserError("the graph's route node names no artifact; pass --out")
    meta, arrays = train(info.kind, data)
    if data.keywords is not None:
        meta["skills_source"] = f"llm keywords from {args.annotator} ({args.samples} answers per question)"
        meta["keywords"] = {str(q): list(k) for q, k in data.keywords.items()}
    if args.aggregation_test:
        responses = args.responses or Path(profile.source)
        meta["aggregator"] = _aggregation_test(
            args.aggregation_test, data, questions, settings, responses, args.aggregation_max_tokens
        )
    for path in write_artifact(out, meta, arrays, command_line()):
        print(f"wrote {path}")
    if meta.get("kind") == "answers":
        from coe.routing.answers import plot_calibration

        print(f"wrote {plot_calibration(out, meta)}")
    return 0


def _cross_validate(
    args: argparse.Namespace,
    loaded: LoadedGraph,
    data: TrainData,
    questions: dict[int, Question],
    settings: Settings,
) -> int:
    import asyncio
    import json

    from coe.errors import UserError
    from coe.routing.cv import CVOptions, cross_validate

    if args.cv < 2:
        raise UserError("--cv needs at least 2 folds")
    if args.replay_dir is None:
        raise UserError("--cv needs --replay-dir (the experts' recorded outputs)")
    shots = args.shots_path or Path(args.data_path).parent / "validation.parquet"
    out = args.cv_out
    options = CVOptions(folds=args.cv, out=out, replay_dir=args.replay_dir, shots_path=shots)
    result = asyncio.run(cross_validate(loaded, data, questions, options, settings))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(
        f"{result['graph']}: {args.cv}-fold CV accuracy {result['accuracy']:.4f} on {result['n']} questions, "
        f"{result['calls_per_question']} calls/question (at most {result['max_distinct_experts']} distinct), "
        f"cost ${result['cost']:.4f} (${result['cost_per_question']:.6f}/question); "
        f"best single {result['best_single_accuracy']:.4f} (${result['best_single_cost']:.4f}), "
        f"oracle {result['oracle_accuracy']:.4f}"
    )
    print(f"wrote {out}/cv.json")
    return 0


def _with_keywords(
    args: argparse.Namespace, data: TrainData, questions: dict[int, Question], settings: Settings
) -> TrainData:
    """The paper's skills: an LLM's keywords for every profiling question."""
    import asyncio
    import dataclasses

    from coe.errors import UserError
    from coe.routing.skills import annotate_questions

    if not args.annotator:
        raise UserError("--skills llm needs --annotator EXPERT")
    chosen = [questions[q] for q in data.profile.question_ids]
    keywords = asyncio.run(
        annotate_questions(
            chosen, args.annotator, settings, samples=args.samples, max_tokens=args.annotator_max_tokens
        )
    )
    labelled = sum(bool(k) for k in keywords.values())
    print(
        f"keywords kept for {labelled} of {len(chosen)} questions "
        f"({args.annotator}, {args.samples} answers each)"
    )
    return dataclasses.replace(data, keywords=keywords)


def _aggregation_test(
    n: int, data: TrainData, questions: dict[int, Question], settings: Settings, source: Path, max_tokens: int
) -> dict[str, Any]:
    """Pick the aggregator on up to ``n`` profiling questions that have one right and two wrong
    recorded responses, spread over categories."""
    import asyncio

    from coe.routing.aggtest import aggregation_test, recorded_responses, synthetic_candidates

    responses = recorded_responses(source, data.profile.question_ids)
    by_category: dict[str, list[int]] = {}
    for qid, category in zip(data.profile.question_ids, data.profile.categories, strict=True):
        if synthetic_candidates(questions[qid], responses.get(qid, {})) is not None:
            by_category.setdefault(category, []).append(qid)
    picked: list[int] = []
    while len(picked) < n and any(by_category.values()):
        for ids in by_category.values():
            if ids and len(picked) < n:
                picked.append(ids.pop(0))
    chosen = [questions[q] for q in picked]
    result = asyncio.run(aggregation_test(data.experts, chosen, responses, settings, max_tokens=max_tokens))
    print(f"aggregation test on {result['questions']} questions: {result['scores']} -> {result['chosen']}")
    return {"task": data.profile.dataset, "responses": str(source), **result}
