"""Every graph of graphs/mmlu_pro runs through `coe eval` on the slice (three replayed models,
artifacts trained on the slice); with ../shared, the shipped graphs and artifacts run as shipped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from routers_data import MODELS, REPO, SHARED, SLICE, slice_graph

from coe.cli import main
from coe.config import Settings
from coe.eval.runner import EvalOptions, run_eval

pytest_plugins = ["routers_support"]

GRAPHS = {
    "single-best": None,
    "vote": None,
    "random": None,
    "coe": "category",
    "bench-coe-subject": "category",
    "bench-coe-query": "correctness",
    "symbolic-moe": "skills",
    "symbolic-moe-top": "skills",
    "cost-aware": "correctness",
    "frugal": "answers",
    "ensemble-3": "answers",
    "mixed-frugal": "answers",
}
LIMIT = 28


def test_every_shipped_graph_is_covered() -> None:
    shipped = {p.stem for p in (REPO / "graphs" / "mmlu_pro").glob("*.yaml")}
    assert shipped == set(GRAPHS)


def evaluate(graph: Path, data_dir: Path, out: Path, replay: Path = SLICE / "outputs") -> dict:
    options = EvalOptions(
        graph=str(graph),
        dataset="mmlu-pro",
        out=out,
        data_path=str(data_dir / "test.jsonl"),
        replay_dir=replay,
        limit=LIMIT,
        progress=False,
    )
    return asyncio.run(run_eval(options, Settings.load()))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_runs_on_the_slice(
    name: str, embed_cache: Path, artifacts: dict[str, Path], slice_data_dir: Path, tmp_path: Path
) -> None:
    kind = GRAPHS[name]
    graph = slice_graph(name, tmp_path, artifacts[kind] if kind else None)
    summary = evaluate(graph, slice_data_dir, tmp_path / "out")
    assert summary["n"] == LIMIT and summary["errors"] == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    calls = [len(set(r["experts"])) for r in rows]
    assert set(r["experts"][0] for r in rows) <= set(MODELS)
    if name == "vote":
        assert set(calls) == {3}
    elif name.startswith("symbolic-moe"):
        assert max(calls) <= 3 and summary["calls_per_question"] <= 3
    elif name in ("frugal", "ensemble-3", "mixed-frugal"):  # cascades: as many as they needed
        assert min(calls) >= (2 if name == "ensemble-3" else 1) and max(calls) <= 3
        assert summary["calls_per_question"] <= 3
    else:
        assert set(calls) == {1}
    report = (tmp_path / "out" / "report.md").read_text()
    assert ("Cost–accuracy curve" in report) == (name == "cost-aware")
    if name == "cost-aware":
        curve = summary["cost_curve"]
        assert curve["strong"] == MODELS[0] and 0 < curve["auc"] <= 1
        assert (tmp_path / "out" / "cost_curve.png").is_file()


needs_shared = pytest.mark.skipif(
    not (SHARED / "outputs").is_dir(), reason="needs ../shared/data/mmlu_pro (the 30 models' replay files)"
)


@needs_shared
def test_shipped_graphs_validate() -> None:
    paths = [str(p) for p in sorted((REPO / "graphs" / "mmlu_pro").glob("*.yaml"))]
    assert main(["graph", "validate", "--replay-dir", str(SHARED / "outputs"), *paths]) == 0


@needs_shared
@pytest.mark.parametrize("name", ["symbolic-moe", "cost-aware"])
def test_shipped_graph_as_shipped(name: str, embed_cache: Path, slice_data_dir: Path, tmp_path: Path) -> None:
    """The shipped graph and its artifact (trained on all of dev), on slice questions (all dev)."""
    graph = REPO / "graphs" / "mmlu_pro" / f"{name}.yaml"
    summary = evaluate(graph, slice_data_dir, tmp_path / "out", SHARED / "outputs")
    assert summary["n"] == LIMIT and summary["errors"] == 0
    if name == "symbolic-moe":
        assert summary["calls_per_question"] <= 3
