"""The questions behind a profile, their routing texts and embeddings, and a graph's router."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coe.errors import UserError
from coe.graph.loader import LoadedGraph
from coe.questions.datasets import Question, load_mmlu_pro
from coe.questions.prompts import build_messages
from coe.routing.profiles import Profile
from coe.routing.train import TrainData
from routers.embedding import Embedder, cache_dir, query_text
from routers.static_embedding import StaticEmbedder

__all__ = ["RouteNodeInfo", "load_questions", "read_graph", "route_node", "routing_text", "train_data"]


def routing_text(question: Question) -> str:
    """Exactly what a router embeds for this question at inference (the final question block)."""
    return query_text(build_messages(question, (), "cot0"))


def load_questions(data_path: str | Path, split: str = "test") -> dict[int, Question]:
    return {q.question_id: q for q in load_mmlu_pro(data_path, split=split)}


def train_data(
    profile: Profile,
    questions: dict[int, Question],
    experts: Sequence[str],
    max_tokens: int = 256,
    *,
    progress: bool = False,
    embedder_name: str = "minilm",
) -> TrainData:
    """Embed the profile's questions (cached under ``$COE_EMBED_CACHE`` or ~/.cache/coe/embeddings)."""
    missing = [q for q in profile.question_ids if q not in questions]
    if missing:
        raise UserError(f"{len(missing)} profile questions are not in the data (first: {missing[0]})")
    texts = [routing_text(questions[q]) for q in profile.question_ids]
    embedder = (
        StaticEmbedder(max_tokens=max_tokens)
        if embedder_name == "static"
        else Embedder(max_tokens, cache=cache_dir())
    )
    if progress:
        from tqdm import tqdm

        vectors = [embedder.embed(texts[i : i + 256]) for i in tqdm(range(0, len(texts), 256), unit="x256")]
        import numpy as np

        return TrainData(profile, np.concatenate(vectors), embedder, list(experts))
    return TrainData(profile, embedder.embed(texts), embedder, list(experts))


@dataclass(frozen=True, slots=True)
class RouteNodeInfo:
    """The graph's route node: its name, router, params and the artifact kind it reads ("" if
    none); all empty for a graph without a route node."""

    node: str
    router: str
    params: dict[str, Any]
    kind: str
    artifact: Path | None


def read_graph(path: Path, graphs_dir: Path) -> LoadedGraph:
    """Parse and validate a graph's schema without the semantic checks (its artifact may not
    exist yet: ``coe train`` is about to write it)."""
    from coe import yamlio
    from coe.graph.loader import graph_name
    from coe.graph.spec import GraphSpec

    data, positions = yamlio.parse(path.read_text(encoding="utf-8"), str(path))
    spec = yamlio.validate(data, GraphSpec, str(path), positions)
    return LoadedGraph(graph_name(path, graphs_dir), path, spec, positions)


def route_node(loaded: LoadedGraph) -> RouteNodeInfo:
    from routers import ROUTERS
    from routers.artifacts import resolve

    for name, node in loaded.spec.nodes.items():
        if node.kind == "route":
            params = dict(node.params.get("params") or {})
            router = str(node.params["router"])
            kind = str(getattr(ROUTERS.get(router), "kind", ""))
            artifact = resolve(params["artifact"], loaded.path.parent) if "artifact" in params else None
            return RouteNodeInfo(name, router, params, kind, artifact)
    return RouteNodeInfo("", "", {}, "", None)
