"""Graph validation: every shipped graph is valid; every broken graph gives its exact message."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO, coe

from coe.cli import main
from coe.config import Settings, load_experts
from coe.errors import ConfigError
from coe.graph.catalog import graph_files, load_all
from coe.graph.loader import load_graph
from coe.graph.schema import graph_schema

BROKEN = REPO / "tests" / "data" / "broken_graphs"
LOCAL_EXPERTS = {"smollm2", "smollm2-warm", "gemma3-270m"}


def expected_messages() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for line in (BROKEN / "expected.txt").read_text().splitlines():
        out[line.split(":", 1)[0]].append(line)
    return out


EXPECTED = expected_messages()


def test_corpus_is_large_and_fully_specified() -> None:
    files = sorted(p.name for p in BROKEN.glob("*.yaml"))
    assert len(files) >= 20
    assert sorted(EXPECTED) == files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_graph_message(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_graph(BROKEN / name, known_experts=LOCAL_EXPERTS)
    assert [p.replace(f"{BROKEN}/", "") for p in caught.value.problems] == EXPECTED[name]


def test_validate_cli_exit_code_and_format() -> None:
    result = coe(
        "graph", "validate", str(BROKEN / "04-unknown-kind.yaml"), str(REPO / "graphs" / "vote.yaml")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"{BROKEN}/{EXPECTED['04-unknown-kind.yaml'][0]}"


def test_validate_cli_accepts_replay_experts(tmp_path: Path) -> None:
    graph = tmp_path / "replayed.yaml"
    graph.write_text(
        "experts: [gemma-7b, Mistral-7B-Instruct-v0.2]\nentry: experts\nexit: answer\n"
        "nodes:\n  experts: {kind: experts}\n  vote: {kind: aggregate, aggregator: vote}\n"
        "  answer: {kind: answer}\nedges: [[experts, vote], [vote, answer]]\n"
    )
    assert coe("graph", "validate", str(graph)).returncode == 2
    replay = REPO / "tests" / "data" / "mmlu_pro" / "outputs"
    ok = coe("graph", "validate", "--replay-dir", str(replay), str(graph))
    assert ok.returncode == 0, ok.stderr


def test_every_shipped_graph_is_valid() -> None:
    settings = Settings.load()
    known = {e.name for e in load_experts(settings.experts_file)}
    replay = Path(REPO / "tests" / "data" / "mmlu_pro" / "outputs")
    known |= {p.name.removesuffix(".jsonl.gz") for p in replay.glob("*.jsonl.gz")}
    loaded = load_all(settings.graphs_dir)
    assert {g.name for g in loaded} >= {"single", "vote", "judge-loop"}
    for graph in loaded:
        if graph.name.startswith("mmlu_pro/"):
            continue  # their experts are replayed models, checked by the eval tests
        assert not graph.missing_experts(known), graph.name
    assert len(loaded) == len(graph_files(settings.graphs_dir))


def test_shipped_graphs_point_editors_at_the_schema() -> None:
    for path in graph_files(REPO / "graphs"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema_path = (path.parent / first.split("=", 1)[1]).resolve()
        assert schema_path == REPO / "config" / "graph.schema.json", path


def test_committed_schema_is_current() -> None:
    import json

    committed = json.loads((REPO / "config" / "graph.schema.json").read_text())
    assert committed == graph_schema()
    assert set(committed["$defs"]) >= {
        f"{k}_node" for k in ("route", "experts", "select", "stop", "aggregate")
    }


@pytest.mark.parametrize("config", ["coe.yaml", "coe.gpu.yaml"])
@pytest.mark.parametrize("path", graph_files(REPO / "graphs"), ids=lambda p: p.relative_to(REPO).as_posix())
def test_graph_show_draws_every_shipped_graph(
    path: Path, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drawing calls no expert: every shipped graph draws, whichever experts are configured (the
    GPU deployment's share none with the live routers' artifacts)."""
    assert main(["graph", "show", str(path), "--config", str(REPO / "config" / config)]) == 0
    drawn = capsys.readouterr().out
    assert drawn.count("graph TD") == 1 and "__start__" in drawn and "__end__" in drawn


def test_graph_show_prints_mermaid() -> None:
    result = coe("graph", "show", "judge-loop")
    assert result.returncode == 0, result.stderr
    assert "graph TD" in result.stdout
    assert "judge" in result.stdout and "moderator" in result.stdout
