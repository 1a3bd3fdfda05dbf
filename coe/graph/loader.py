"""Load a graph file: YAML → GraphSpec → every semantic check, each error as FILE:LINE:COL: field: msg."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydantic

from coe import yamlio
from coe.errors import ConfigError
from coe.graph import structure
from coe.graph.conditions import CONDITIONS
from coe.graph.nodes import NODE_KINDS, NodeParams
from coe.graph.nodes.base import Loc, Problem
from coe.graph.spec import GraphSpec


@dataclass(slots=True)
class LoadedGraph:
    name: str
    path: Path
    spec: GraphSpec
    positions: yamlio.Positions
    params: dict[str, NodeParams] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        line, col = yamlio.locate(self.positions, loc)
        return f"{self.path}:{line}:{col}: {yamlio.format_loc(loc)}"

    def expert_refs(self) -> Iterator[tuple[Loc, str]]:
        """Every expert name the graph mentions, with its location."""
        if isinstance(self.spec.experts, list):
            yield from ((("experts", i), name) for i, name in enumerate(self.spec.experts))
        for node_name, node in self.spec.nodes.items():
            kind = NODE_KINDS.get(node.kind)
            for loc, name in kind.expert_refs(self.params[node_name]):
                yield ("nodes", node_name, *loc), name

    def missing_experts(self, known: Collection[str]) -> list[tuple[Loc, str]]:
        return [(loc, name) for loc, name in self.expert_refs() if name not in known]


def graph_name(path: Path, graphs_dir: Path | None) -> str:
    """A graph's name is its path under ``graphs/`` without the extension."""
    path = path.resolve()
    if graphs_dir is not None:
        try:
            return path.relative_to(graphs_dir.resolve()).with_suffix("").as_posix()
        except ValueError:
            pass
    return path.stem


def _node_problems(spec: GraphSpec, params: dict[str, NodeParams], base_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    for name, node in spec.nodes.items():
        where: Loc = ("nodes", name)
        if node.kind not in NODE_KINDS:
            problems.append(
                ((*where, "kind"), f"unknown node kind {node.kind!r} (known: {', '.join(NODE_KINDS.names)})")
            )
            continue
        kind = NODE_KINDS.get(node.kind)
        try:
            params[name] = kind.Params.model_validate(node.params)
        except pydantic.ValidationError as err:
            for item in err.errors(include_url=False):
                msg = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
                problems.append(((*where, *item["loc"]), msg))
            continue
        pool = spec.experts if isinstance(spec.experts, list) else []
        problems.extend(((*where, *loc), msg) for loc, msg in kind.check(params[name], pool, base_dir))
    return problems


def _reference_problems(spec: GraphSpec) -> list[Problem]:
    nodes = spec.nodes
    problems: list[Problem] = []

    def need(loc: Loc, target: str) -> None:
        if target not in nodes:
            problems.append((loc, f"no node named {target!r}"))

    need(("entry",), spec.entry)
    need(("exit",), spec.exit)
    for i, edge in enumerate(spec.edges):
        need(("edges", i, "from"), edge.source)
        need(("edges", i, "to"), edge.target)
    for i, cond in enumerate(spec.conditional_edges):
        need(("conditional_edges", i, "from"), cond.source)
        need(("conditional_edges", i, "then"), cond.then)
        need(("conditional_edges", i, "else"), cond.otherwise)
        if cond.when not in CONDITIONS:
            problems.append(
                (
                    ("conditional_edges", i, "when"),
                    f"unknown condition {cond.when!r} (known: {', '.join(CONDITIONS)})",
                )
            )
    for name, node in nodes.items():
        if node.kind == "stop":
            for key in ("next", "done"):
                target = node.params.get(key)
                if isinstance(target, str):
                    need(("nodes", name, key), target)
    return problems


def check(loaded: LoadedGraph, base_dir: Path) -> list[str]:
    spec = loaded.spec
    problems = _node_problems(spec, loaded.params, base_dir)
    problems += _reference_problems(spec)
    if not problems:
        problems += structure.problems(spec)
    return [f"{loaded.where(loc)}: {msg}" for loc, msg in problems]


def load_graph(
    path: Path,
    *,
    graphs_dir: Path | None = None,
    known_experts: Collection[str] | None = None,
) -> LoadedGraph:
    """Parse and check a graph file; with ``known_experts``, unknown expert names are errors too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}:1:1: (file): cannot read: {err.strerror}") from None
    data, positions = yamlio.parse(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1:1: (root): a graph file must be a mapping")
    spec = yamlio.validate(data, GraphSpec, str(path), positions)
    loaded = LoadedGraph(graph_name(path, graphs_dir), path, spec, positions)
    problems = check(loaded, path.parent)
    if not problems and known_experts is not None:
        problems = [
            f"{loaded.where(loc)}: unknown expert {name!r}"
            for loc, name in loaded.missing_experts(known_experts)
        ]
    if problems:
        raise ConfigError(problems)
    return loaded
