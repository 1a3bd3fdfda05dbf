"""Paths and helpers of the router tests (fixtures are in ``routers_support``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "tests" / "data" / "mmlu_pro"
OUTPUTS = SLICE / "outputs"
MODELS = ["Meta-Llama-3_1-8B-Instruct", "Mistral-7B-Instruct-v0.2", "gemma-7b"]
SHARED = REPO.parent / "shared" / "data" / "mmlu_pro"


def slice_graph(name: str, folder: Path, artifact: Path | None = None) -> Path:
    """A shipped ``graphs/mmlu_pro`` graph over the slice's three models (and ``artifact``)."""
    spec: dict[str, Any] = yaml.safe_load((REPO / "graphs" / "mmlu_pro" / f"{name}.yaml").read_text())
    spec.pop("name", None)
    spec["experts"] = list(MODELS)
    for node in spec["nodes"].values():
        params = node.get("params") or {}
        if node["kind"] == "route" and "artifact" in params:
            params["artifact"] = str(artifact)
        if node["kind"] == "route" and params.get("experts"):
            params["experts"] = [MODELS[0]]
        if node["kind"] == "route" and params.get("strong"):
            params["strong"] = MODELS[0]
        if node["kind"] == "cascade":
            node["artifact"] = str(artifact)
            if node.get("experts"):
                node["experts"] = [MODELS[2], MODELS[1], MODELS[0]]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def profile_args(out: Path) -> list[str]:
    """``coe profile`` over the slice's replay files."""
    return [
        "profile",
        "--replay-dir", str(OUTPUTS),
        "--data-path", str(SLICE / "test_slice.jsonl"),
        "--shots-path", str(SLICE / "validation.jsonl"),
        "--experts", ",".join(MODELS),
        "--out", str(out),
    ]  # fmt: skip
