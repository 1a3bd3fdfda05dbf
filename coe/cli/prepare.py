"""``coe prepare``: resolve every configured expert's model once (assemble packaged GGUFs)."""

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
    from routers.static_embedding import distill  # the fast routers' embedding, from MiniLM

    print(f"static embedding: {distill()}")
    return 0
