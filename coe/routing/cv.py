"""Cross-validation of a graph's router over a profile's questions, through ``coe eval``.

Fold ``f`` holds the questions with ``question_id % k == f``. For each fold the router's artifact
is trained on the other folds only, the graph is copied with its route node pointing at that
artifact, and ``coe eval`` runs the copy on the fold's questions over the replayed experts (the
same prompts, extraction, vote and cost accounting as any evaluation). Reported: accuracy, calls
and cost per question over all folds, beside the best single expert (chosen on the training folds)
and the oracle on the same questions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from coe.config import Settings
from coe.eval.runner import EvalOptions, run_eval
from coe.graph.loader import LoadedGraph
from coe.questions.datasets import Question
from coe.routing.data import route_node
from coe.routing.profiles import Profile
from coe.routing.train import TrainData, train
from routers.artifacts import write_artifact

__all__ = ["CVOptions", "cross_validate"]


@dataclass(frozen=True, slots=True)
class CVOptions:
    folds: int
    out: Path
    replay_dir: Path
    shots_path: Path
    concurrency: int = 16


def _question_row(q: Question) -> dict[str, Any]:
    return {
        "question_id": q.question_id,
        "question": q.question,
        "options": list(q.options),
        "answer": q.answer,
        "category": q.category,
        "src": q.src,
        "cot_content": q.cot_content,
    }


def _fold_graph(loaded: LoadedGraph, node: str, artifact: Path | None, folder: Path) -> Path:
    """The graph, copied into ``folder``: every node reading the route's artifact (a cascade's or
    an aggregator's ``artifact`` too) reads the fold's instead; other artifacts keep their file."""
    from routers.artifacts import resolve

    data = yaml.safe_load(loaded.path.read_text(encoding="utf-8"))
    base = loaded.path.parent
    route_params = data["nodes"][node].get("params") or {} if node else {}
    original = resolve(str(route_params["artifact"]), base) if "artifact" in route_params else None
    fold = artifact.resolve() if artifact is not None else None
    for spec in data["nodes"].values():
        for holder in (spec, spec.get("params") or {}):
            value = holder.get("artifact")
            if isinstance(value, str):
                path = resolve(value, base)
                holder["artifact"] = str(fold if fold is not None and path == original else path)
    path = folder / f"{loaded.path.stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _baselines(profile: Profile, experts: list[str], test: np.ndarray[Any, Any]) -> dict[str, Any]:
    matrix = profile.matrix(experts)
    best = experts[int(np.argmax(matrix[~test].mean(axis=0)))]
    return {
        "best_single": best,
        "best_single_correct": int(matrix[test, experts.index(best)].sum()),
        "oracle_correct": int(matrix[test].any(axis=1).sum()),
        "best_single_cost": profile.cost_per_query[best] * int(test.sum()),
    }


async def cross_validate(
    loaded: LoadedGraph,
    data: TrainData,
    questions: dict[int, Question],
    options: CVOptions,
    settings: Settings,
) -> dict[str, Any]:
    info = route_node(loaded)
    profile = data.profile
    ids = np.array(profile.question_ids)
    folds: list[dict[str, Any]] = []
    for fold in range(options.folds):
        folder = options.out / f"fold{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        test = ids % options.folds == fold
        artifact = None
        if info.kind:
            meta, arrays = train(info.kind, data.subset([int(q) for q in ids[~test]]))
            artifact = folder / "artifact.json"
            write_artifact(artifact, meta, arrays, f"(cross-validation fold {fold} of {options.folds})")
        graph = _fold_graph(loaded, info.node, artifact, folder)
        data_file = folder / "questions.jsonl"
        with data_file.open("w", encoding="utf-8") as handle:
            for qid in ids[test]:
                handle.write(json.dumps(_question_row(questions[int(qid)]), ensure_ascii=False) + "\n")
        summary = await run_eval(
            EvalOptions(
                graph=str(graph),
                dataset="mmlu-pro",
                out=folder / "eval",
                data_path=str(data_file),
                shots_path=options.shots_path,
                replay_dir=options.replay_dir,
                concurrency=options.concurrency,
                progress=False,
            ),
            settings,
        )
        experts = [e for e in profile.experts if e in summary["experts"]] or list(profile.experts)
        folds.append(
            {
                "fold": fold,
                "n": summary["n"],
                "correct": summary["correct"],
                "calls": sum(summary["expert_calls"].values()),
                "distinct_calls_max": _max_distinct(folder / "eval" / "results.jsonl"),
                "cost": summary["cost"],
                **_baselines(profile, experts, test),
            }
        )
    return _total(loaded.name, folds)


def _max_distinct(results: Path) -> int:
    most = 0
    with results.open(encoding="utf-8") as handle:
        for line in handle:
            most = max(most, len(set(json.loads(line)["experts"])))
    return most


def _total(graph: str, folds: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(f["n"] for f in folds)
    return {
        "graph": graph,
        "folds": folds,
        "n": n,
        "accuracy": round(sum(f["correct"] for f in folds) / n, 4),
        "calls_per_question": round(sum(f["calls"] for f in folds) / n, 3),
        "max_distinct_experts": max(f["distinct_calls_max"] for f in folds),
        "cost_per_question": sum(f["cost"] for f in folds) / n,
        "cost": round(sum(f["cost"] for f in folds), 4),
        "best_single_accuracy": round(sum(f["best_single_correct"] for f in folds) / n, 4),
        "best_single": sorted({f["best_single"] for f in folds}),
        "best_single_cost": round(sum(f["best_single_cost"] for f in folds), 4),
        "oracle_accuracy": round(sum(f["oracle_correct"] for f in folds) / n, 4),
    }
