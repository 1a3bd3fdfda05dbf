"""Find every graph under ``graphs/``, check it, and compile those whose experts exist."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from coe.errors import ConfigError, GraphNotFound
from coe.graph.compile import GraphPipeline
from coe.graph.loader import LoadedGraph, load_graph
from coe.graph.nodes.base import ExpertLookup

log = logging.getLogger("coe.graph")


def graph_files(graphs_dir: Path) -> list[Path]:
    return sorted(p for p in graphs_dir.rglob("*.yaml") if p.is_file())


def load_all(graphs_dir: Path) -> list[LoadedGraph]:
    """Load every graph; all problems of all files are raised together."""
    loaded, problems = [], []
    for path in graph_files(graphs_dir):
        try:
            loaded.append(load_graph(path, graphs_dir=graphs_dir))
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems)
    return loaded


def resolve(graph: str, graphs_dir: Path) -> Path:
    """``--graph`` takes a name (path under graphs/ without .yaml) or a file path."""
    candidate = Path(graph)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = graphs_dir / f"{graph}.yaml"
    if path.exists():
        return path
    raise GraphNotFound(f"no graph {graph!r} (looked for {path})")


def compile_available(
    graphs: Sequence[LoadedGraph], lookup: ExpertLookup, available: Collection[str], pool: Sequence[str]
) -> dict[str, GraphPipeline]:
    """Compile the graphs whose experts are all available; log each skipped graph and why."""
    out: dict[str, GraphPipeline] = {}
    for graph in graphs:
        missing = sorted({name for _, name in graph.missing_experts(available)})
        if missing:
            log.info("skipping graph %s: experts not configured: %s", graph.name, ", ".join(missing))
            continue
        out[graph.name] = GraphPipeline(graph, lookup, pool)
    return out
