"""``coe train mot``: train a Mixture of Thoughts' router and interaction layers, then evaluate it
on the held-out 10% of MMLU-Pro dev and record the numbers in the checkpoint's config."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_OUTPUTS = "/work/shared/data/mmlu_pro/outputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("coe train mot")
    group.add_argument("--outputs-dir", type=Path, help="mot: recorded outputs whose question ids are dev")
    group.add_argument("--steps", type=int, default=80, help="mot: optimiser steps")
    group.add_argument("--batch", type=int, default=4, help="mot: questions per step")
    group.add_argument("--lr", type=float, default=1e-3, help="mot: AdamW learning rate")
    group.add_argument("--seed", type=int, default=0, help="mot: data order, eval slice and init")
    group.add_argument("--eval-limit", type=int, default=120, help="mot: held-out questions to evaluate")
    group.add_argument("--max-prompt-tokens", type=int, default=160, help="mot: longest prompt kept")
    group.add_argument(
        "--mot-config", type=Path, help="mot: experts and shapes (default: config/mot/mot.json's)"
    )
    group.add_argument(
        "--threads", type=int, default=1, help="mot: torch threads (1 is fastest on a busy machine)"
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from coe.config import Settings
    from coe.errors import UserError
    from coe.mot import checkpoint
    from coe.mot.config import DEFAULT, DEFAULT_CONFIG, read_config
    from coe.mot.data import load_split
    from coe.mot.train import TrainOptions, evaluate, train
    from coe.routing import command_line

    if args.data_path is None:
        raise UserError("coe train mot needs --data-path (MMLU-Pro test.parquet)")
    if args.steps < 0 or args.batch < 1:
        raise UserError("--steps must be >= 0 and --batch >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    settings = Settings.load(args.config)
    config = read_config(args.mot_config) if args.mot_config else DEFAULT
    out: Path = args.out or DEFAULT_CONFIG
    outputs_dir = args.outputs_dir or Path(args.data_path).parent / "outputs"
    model = checkpoint.build(config, settings.model_cache)
    split = load_split(
        Path(args.data_path),
        outputs_dir,
        model.experts,
        seed=args.seed,
        max_prompt_tokens=args.max_prompt_tokens,
        train_limit=args.steps * args.batch,
        eval_limit=args.eval_limit,
    )
    print(f"mot: {len(split.train)} training and {len(split.eval)} held-out questions")
    summary = (
        train(model, split.train, TrainOptions(args.steps, args.batch, args.lr, args.seed))
        if args.steps
        else {}
    )
    results = evaluate(model, split.eval)
    print(json.dumps(results, indent=2))
    model.config = config.model_copy(update={"trained": {**summary, "eval": results}})
    checkpoint.save(model, out, command_line())
    print(f"wrote {out} and {checkpoint.weights_path(out, model.config)}")
    return 0
