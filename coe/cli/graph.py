"""``coe graph validate|schema|show``: check graph files, print their JSON Schema or a Mermaid chart."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coe.errors import ConfigError
from coe.experts.base import ExpertClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="graph_command", required=True, metavar="ACTION")
    validate = sub.add_parser("validate", help="check graph files; errors as FILE:LINE:COL: field: message")
    validate.add_argument("paths", nargs="+", type=Path)
    validate.add_argument("--replay-dir", type=Path, help="replay experts (DIR/<model>.jsonl.gz) also count")
    validate.add_argument("--config", type=Path, help="settings file naming the experts file")
    sub.add_parser("schema", help="print the JSON Schema of graph files")
    show = sub.add_parser("show", help="print a graph as a Mermaid flowchart")
    show.add_argument("name", help="graph name or file path")
    show.add_argument("--config", type=Path)


def _known_experts(args: argparse.Namespace) -> set[str]:
    from coe.config import Settings, load_experts

    settings = Settings.load(args.config)
    known = {e.name for e in load_experts(settings.experts_file)}
    if args.replay_dir:
        known |= {p.name.removesuffix(".jsonl.gz") for p in Path(args.replay_dir).glob("*.jsonl.gz")}
    return known


def _validate(args: argparse.Namespace) -> int:
    from coe.config import Settings
    from coe.graph.loader import load_graph

    known = _known_experts(args)
    graphs_dir = Settings.load(args.config).graphs_dir
    files = [f for p in args.paths for f in (sorted(p.rglob("*.yaml")) if p.is_dir() else [p])]
    problems: list[str] = []
    for path in files:
        try:
            load_graph(path, graphs_dir=graphs_dir, known_experts=known)
        except ConfigError as err:
            problems.extend(err.problems)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{len(files)} graph(s) valid")
    return 0


def _show(args: argparse.Namespace) -> int:
    from coe.config import Settings
    from coe.graph.catalog import resolve
    from coe.graph.compile import GraphPipeline
    from coe.graph.loader import load_graph

    settings = Settings.load(args.config)
    loaded = load_graph(resolve(args.name, settings.graphs_dir), graphs_dir=settings.graphs_dir)
    # A `pool` graph is drawn over no particular pool (a trained router then keeps all it knows).
    pool = loaded.spec.experts if isinstance(loaded.spec.experts, list) else []
    print(GraphPipeline(loaded, _NoExperts(), pool).mermaid())
    return 0


class _NoExperts:
    """Drawing a graph calls no expert."""

    def client(self, name: str) -> ExpertClient:
        raise ConfigError(f"drawing a graph does not call experts ({name})")


def run(args: argparse.Namespace) -> int:
    if args.graph_command == "validate":
        return _validate(args)
    if args.graph_command == "schema":
        from coe.graph.schema import graph_schema

        print(json.dumps(graph_schema(), indent=2))
        return 0
    return _show(args)
