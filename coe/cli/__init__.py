"""The ``coe`` command. Each subcommand lives in its own module, imported only when used.

Exit codes: 0 success, 2 bad input (one-line reason), 1 failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from coe import logs
from coe.errors import CoeError, UserError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("coe.cli.serve", "run the OpenAI-compatible API (embedded default with no --config)"),
    "chat": ("coe.cli.chat", "ask a graph one question, in-process or against --url"),
    "graph": ("coe.cli.graph", "validate graph files, print their JSON Schema, or draw one"),
    "eval": ("coe.cli.eval", "evaluate a graph on MMLU-Pro, GPQA or a CSV (replayed or live experts)"),
    "prepare": ("coe.cli.prepare", "resolve configured models once (assemble packaged GGUFs)"),
    "profile": ("coe.cli.profile", "build expert profiles from replay files or eval results"),
    "train": ("coe.cli.train", "train (or cross-validate) the router a graph names, from a profile"),
    "report": ("coe.cli.report", "draw the accuracy-calls and accuracy-cost frontier of several runs"),
    "batch": ("coe.cli.batch", "submit a JSONL batch to the Redis batch scheduler; read its status, results"),
    "worker": ("coe.cli.worker", "serve batch calls: load each expert once, drain its queue, release it"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coe", description="Compose expert LLMs: route, batch, aggregate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = build_parser().parse_args(argv)
    logs.setup(args.verbose)
    try:
        code: int = importlib.import_module(args._module).run(args)
    except UserError as err:
        print(f"coe {args.command}: {err}", file=sys.stderr)
        return 2
    except CoeError as err:
        print(f"coe {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
