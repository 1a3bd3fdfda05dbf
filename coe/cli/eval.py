"""``coe eval``: evaluate a graph on MMLU-Pro, GPQA or a CSV; write results, summary, report, plots."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graph", required=True, help="graph name (path under graphs/) or file")
    parser.add_argument("--dataset", required=True, choices=["mmlu-pro", "gpqa", "csv"])
    parser.add_argument("--data-path", help="parquet/JSONL (MMLU-Pro), dataset.zip (GPQA), CSV; or a hub id")
    parser.add_argument("--split", help="test (MMLU-Pro default) | main, diamond, extended (GPQA)")
    parser.add_argument("--limit", type=int, help="keep the first N questions by question_id")
    parser.add_argument("--experts", help="comma-separated expert pool for graphs that take one")
    parser.add_argument("--replay-dir", type=Path, help="DIR/<model>.jsonl.gz become replay experts")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (resumes)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt", choices=["cot5", "cot0", "gpqa"], help="prompt style")
    parser.add_argument("--shots-path", type=Path, help="MMLU-Pro validation split for 5-shot prompts")
    parser.add_argument("--max-tokens", type=int, help="answer length limit for live experts")
    parser.add_argument(
        "--engine",
        choices=["direct", "langgraph"],
        default="direct",
        help="graph executor (same nodes; direct is faster for bulk runs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="GPQA option shuffle seed")
    parser.add_argument("--batch", action="store_true", help="run through the Redis batch scheduler")
    parser.add_argument("--config", type=Path, help="settings file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from coe.config import Settings
    from coe.eval.runner import EvalOptions, run_eval

    options = EvalOptions(
        graph=args.graph,
        dataset=args.dataset,
        out=args.out,
        data_path=args.data_path,
        split=args.split,
        limit=args.limit,
        experts=tuple(e for e in (args.experts or "").split(",") if e),
        replay_dir=args.replay_dir,
        concurrency=args.concurrency,
        prompt=args.prompt,
        shots_path=args.shots_path,
        max_tokens=args.max_tokens,
        engine=args.engine,
        seed=args.seed,
        progress=not args.quiet,
        batch=args.batch,
    )
    summary = asyncio.run(run_eval(options, Settings.load(args.config)))
    comparison = summary.get("comparison", {})
    print(
        f"{summary['graph']}: accuracy {summary['accuracy']:.4f} on {summary['n']} questions "
        f"({summary['correct']} correct, {summary['unparsable']} unparsable), cost ${summary['cost']:.4f}, "
        f"{summary['wall_s']} s"
    )
    if comparison.get("best_single"):
        print(
            f"best single expert {comparison['best_single']}: {comparison['best_single_accuracy']:.4f}; "
            f"oracle {comparison['oracle_accuracy']:.4f}"
        )
    print(f"wrote {args.out}/results.jsonl, summary.json, report.md, per_category.png, cost_accuracy.png")
    return 0
