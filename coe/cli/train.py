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
    from coe.eval.datasets import Question
    from coe.graph.loader import LoadedGraph
    from coe.routing.train import TrainData


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graph", required=True, help="graph name (path under graphs/) or file")
    parser.add_argument("--profile", type=Path, required=True, help="profile JSON (coe profile)")
    parser.add_argument("--data-path", required=True, help="the profile's questions (MMLU-Pro parquet/JSONL)")
    parser.add_argument("--out", type=Path, help="artifact to write (default: the one the graph names)")
    parser.add_argument("--max-tokens", type=int, default=256, help="embedder input limit (word pieces)")
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
    parser.add_argument("--config", type=Path, help="settings file")


def run(args: argparse.Namespace) -> int:
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
        profile.subset(profile.question_ids), questions, experts, args.max_tokens, progress=True
    )
    if args.cv is not None:
        return _cross_validate(args, loaded, data, questions, settings)
    from coe.routing.train import train
    from routers.artifacts import write_artifact

    out = args.out or info.artifact
    if out is None:
        raise UserError("the graph's route node names no artifact; pass --out")
    meta, arrays = train(info.kind, data)
    if args.aggregation_test:
        meta["aggregator"] = _aggregation_test(args.aggregation_test, data, questions, settings)
    for path in write_artifact(out, meta, arrays, command_line()):
        print(f"wrote {path}")
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


def _aggregation_test(
    n: int, data: TrainData, questions: dict[int, Question], settings: Settings
) -> dict[str, Any]:
    """Pick the aggregator on ``n`` profiling questions, spread over categories."""
    import asyncio

    from coe.routing.aggtest import aggregation_test

    by_category: dict[str, list[int]] = {}
    for qid, category in zip(data.profile.question_ids, data.profile.categories, strict=True):
        by_category.setdefault(category, []).append(qid)
    picked: list[int] = []
    while len(picked) < min(n, len(data.profile.question_ids)):
        for ids in by_category.values():
            if ids and len(picked) < n:
                picked.append(ids.pop(0))
    result = asyncio.run(aggregation_test(data.experts, [questions[q] for q in picked], settings))
    print(f"aggregation test on {len(picked)} questions: {result['scores']} -> {result['chosen']}")
    return {"task": data.profile.dataset, **result}
