"""``coe report``: the accuracy–calls and accuracy–cost frontier of several runs on the same
questions (``coe eval`` folders or ``coe train --cv`` folders), as a table and a plot."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="coe eval or --cv-out folders")
    parser.add_argument("--out", type=Path, default=Path("runs/frontier"), help="where frontier.* go")
    parser.add_argument("--title", default="Accuracy against budget", help="the plot's title")


def run(args: argparse.Namespace) -> int:
    from coe.eval.frontier import write_frontier

    summary = write_frontier(args.runs, args.out, args.title)
    for r in sorted(summary["runs"], key=lambda r: r["cost_per_question"]):
        mark = "*" if r["frontier_calls"] or r["frontier_cost"] else " "
        kind = "CV" if r["cross_validated"] else "in-sample"
        print(
            f"{mark} {r['graph']:<28} {kind:<9} {100 * r['accuracy']:5.1f}%  "
            f"{r['calls_per_question']:5.2f} calls  ${r['cost_per_question']:.6f}/question"
        )
    print(
        f"wrote {args.out}/frontier.md, frontier.json, frontier.png "
        f"({summary['n']} questions; * on a frontier)"
    )
    return 0
