"""``coe batch submit FILE.jsonl --graph NAME | status ID | results ID``.

Input lines: ``{"id": str, "messages": [...], "answer"?: str}``. ``submit`` prints the batch id,
then drives the batch to its end: with ``REDIS_URL`` unset it starts its own Redis (kept in
STATE_DIR/batch) and an in-process worker; with it set, ``coe worker`` processes do the calls.
``status`` prints JSON; ``results`` prints one line per finished item:
``{"id", "content", "prediction"?, "trace"}`` (with ``"error"`` for an item that failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = actions.add_parser("submit", help="submit a JSONL file and run it to the end")
    submit.add_argument("file", type=Path, help='JSONL: {"id", "messages", "answer"?} per line')
    submit.add_argument("--graph", required=True, help="graph name (path under graphs/) or file")
    submit.add_argument("--experts", help="comma-separated expert pool for graphs that take one")
    submit.add_argument("--max-tokens", type=int, help="answer length limit for every call")
    submit.add_argument(
        "--detach", action="store_true", help="only submit (needs REDIS_URL; a coe worker adopts it)"
    )
    status = actions.add_parser("status", help="print a batch's progress, dead letters and model loads")
    status.add_argument("id")
    results = actions.add_parser("results", help="print the outputs of a batch's finished items")
    results.add_argument("id")
    for sub in (submit, status, results):
        sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="settings file")


def _announce(batch_id: str) -> None:
    print(batch_id, flush=True)


def _report(status: dict[str, Any]) -> int:
    items, calls = status["items"], status["calls"]
    loads = {name: e["model_loads"] for name, e in status["experts"].items() if e["enqueued"]}
    print(
        f"batch {status['id']}: {status['status']}, {items['done']}/{items['total']} items done, "
        f"{items['failed']} failed; {calls['done']} calls, {calls['dead']} dead-lettered; "
        f"model loads {loads}; at most {status['max_resident']} model(s) resident",
        file=sys.stderr,
    )
    return 1 if items["failed"] else 0


def run(args: argparse.Namespace) -> int:
    from coe.batch.run import read_batch, submit_batch
    from coe.batch.store import read_items
    from coe.config import Settings

    settings = Settings.load(args.config)
    if args.action == "submit":
        items = read_items(args.file)
        experts = tuple(e for e in (args.experts or "").split(",") if e)
        final = asyncio.run(
            submit_batch(
                settings,
                items,
                args.graph,
                experts=experts,
                max_tokens=args.max_tokens,
                detach=args.detach,
                announce=_announce,
            )
        )
        return 0 if final is None else _report(final)
    status, outputs = asyncio.run(read_batch(settings, args.id))
    if args.action == "status":
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    for output in outputs:
        print(json.dumps(output, ensure_ascii=False))
    if status["status"] != "done":
        print(
            f"batch {args.id} is {status['status']}: {len(outputs)}/{status['items']['total']} items done",
            file=sys.stderr,
        )
    return 0
