"""Find every graph under ``graphs/``, check it, and compile those whose experts exist."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from coe.errors import ConfigError, GraphNotFound
from coe.graph.compile import GraphPipeline
from coe.graph.loader import LoadedGraph, load_graph
from coe.graph.nodes import NODE_KINDS
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


def unservable(graph: LoadedGraph, available: Collection[str], pool: Sequence[str]) -> str | None:
    """Why ``graph`` cannot be served over these experts, or None if it can.

    Either it names experts that are not configured, or a node's check fails over the experts the
    graph would use (its own list, else ``pool``): a trained router whose artifact knows none of
    the pool's experts, say. Loading ran the same checks with no pool (a ``pool`` graph), so any
    problem here comes from the pool.
    """
    missing = sorted({name for _, name in graph.missing_experts(available)})
    if missing:
        return f"experts not configured: {', '.join(missing)}"
    experts = graph.spec.experts if isinstance(graph.spec.experts, list) else list(pool)
    for name, node in graph.spec.nodes.items():  # in-process models (mot): a missing checkpoint
        unavailable = getattr(NODE_KINDS.get(node.kind), "unavailable", None)
        if unavailable is not None and (reason := unavailable(graph.params[name], graph.path.parent)):
            return f"nodes.{name}: {reason}"
    problems = [
        f"nodes.{name}.{'.'.join(str(part) for part in loc)}: {message}"
        for name, node in graph.spec.nodes.items()
        for loc, message in NODE_KINDS.get(node.kind).check(graph.params[name], experts, graph.path.parent)
    ]
    return "; ".join(problems) or None


def compile_available(
    graphs: Sequence[LoadedGraph],
    lookup: ExpertLookup,
    available: Collection[str],
    pool: Sequence[str],
    engine: str = "direct",
) -> dict[str, GraphPipeline]:
    """Compile the graphs that can be served over these experts; log each skipped graph and why."""
    out: dict[str, GraphPipeline] = {}
    for graph in graphs:
        reason = unservable(graph, available, pool)
        if reason is not None:
            log.info("skipping graph %s: %s", graph.name, reason)
            continue
        out[graph.name] = GraphPipeline(graph, lookup, pool, engine=engine)
    return out
