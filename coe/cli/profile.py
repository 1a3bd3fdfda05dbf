"""``coe profile``: build an expert profile (per-question correctness, per-category accuracy,
per-skill scores, cost per query) from replay files or from ``coe eval`` results."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay-dir", type=Path, help="DIR/<model>.jsonl.gz: recorded outputs")
    source.add_argument("--results", type=Path, nargs="+", help="coe eval output folders or results.jsonl")
    parser.add_argument("--data-path", help="MMLU-Pro parquet/JSONL: gold answers, categories, skills (src)")
    parser.add_argument("--shots-path", type=Path, help="validation split for the 5-shot prompt's cost")
    parser.add_argument("--experts", help="comma-separated experts (default: all in the results)")
    parser.add_argument("--out", type=Path, required=True, help="profile JSON to write")


def run(args: argparse.Namespace) -> int:
    from coe.errors import UserError
    from coe.routing import command_line
    from coe.routing.profiles import build_from_replay, build_from_results

    experts = [e for e in (args.experts or "").split(",") if e]
    questions = []
    if args.data_path:
        from coe.questions.datasets import load_mmlu_pro

        questions = load_mmlu_pro(args.data_path)
    if args.replay_dir:
        if not questions or not experts:
            raise UserError("--replay-dir needs --data-path and --experts")
        from coe.questions.datasets import load_validation_shots

        shots_path = args.shots_path or Path(args.data_path).parent / "validation.parquet"
        profile = build_from_replay(args.replay_dir, questions, experts, load_validation_shots(shots_path))
    else:
        profile = build_from_results(args.results, questions, experts)
    profile = profile.model_copy(update={"command": command_line()})
    profile.write(args.out)
    summary = profile.summarise().summary
    print(f"wrote {args.out}: {summary['n']} questions, {len(profile.experts)} experts")
    for name, acc in sorted(summary["overall"].items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {acc:.4f} (${profile.cost_per_query[name]:.6f}/query)")
    print(f"  oracle: {summary['oracle']:.4f}")
    return 0
