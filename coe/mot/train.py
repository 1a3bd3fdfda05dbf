"""Training and evaluating a MoT: only the router and the interaction layers learn.

Loss per batch: the primary's next-token loss on the answer letter, + 0.01 × the router's mean
entropy + 0.01 × a load-balance term (Switch Transformer's: E · Σ_e f_e · P_e, with f_e the share
of the batch whose primary is e). The router's weights reach the loss through each peer's
straight-through scale (``Route.scale``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from coe.mot.data import Example, letter_ids
from coe.mot.model import MixtureOfThoughts

log = logging.getLogger("coe.mot")

ENTROPY_WEIGHT = 0.01
BALANCE_WEIGHT = 0.01


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 80
    batch: int = 4
    lr: float = 1e-3
    seed: int = 0
    progress: bool = True


def embed(examples: Sequence[Example]) -> Tensor:
    """The router's input: MiniLM embeddings of each example's query text (cached on disk)."""
    from routers.embedding import Embedder, cache_dir, query_text

    vectors = Embedder(cache=cache_dir()).embed([query_text(e.messages) for e in examples])
    return torch.from_numpy(vectors.copy())


def batch_loss(
    model: MixtureOfThoughts, examples: Sequence[Example], embeddings: Tensor
) -> dict[str, Tensor]:
    """The training loss of one batch, with its parts."""
    token_losses = []
    probs = []
    primaries = []
    for example, embedding in zip(examples, embeddings, strict=True):
        route = model.route(embedding)
        states = {i: model.hidden_states(model.experts[i], example.prompt_ids[i])[0] for i in route.peers}
        peers = model.peers(route, states, differentiable=True)
        p = route.primary
        logits = model.primary_logits(
            model.experts[p], [*example.prompt_ids[p], example.answer_ids[p]], peers, 2
        )
        token_losses.append(F.cross_entropy(logits[:1], torch.tensor([example.answer_ids[p]])))
        probs.append(route.probs)
        primaries.append(p)
    stacked = torch.stack(probs)
    n_experts = stacked.shape[1]
    entropy = -(stacked * stacked.clamp_min(1e-9).log()).sum(dim=1).mean()
    share = torch.bincount(torch.tensor(primaries), minlength=n_experts).float() / len(primaries)
    balance = n_experts * (share * stacked.mean(dim=0)).sum()
    token = torch.stack(token_losses).mean()
    total = token + ENTROPY_WEIGHT * entropy + BALANCE_WEIGHT * balance
    return {"loss": total, "token": token, "entropy": entropy, "balance": balance}


def train(model: MixtureOfThoughts, examples: Sequence[Example], options: TrainOptions) -> dict[str, Any]:
    """``options.steps`` optimiser steps over seeded batches of ``examples``; returns a summary."""
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(options.seed)
    order = list(range(len(examples)))
    random.Random(options.seed).shuffle(order)
    embeddings = embed(examples)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr)
    model.train()
    started = time.monotonic()
    history: list[float] = []
    steps: Iterable[int] = range(options.steps)
    if options.progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="mot", unit="step")
    for step in steps:
        picked = [order[(step * options.batch + j) % len(order)] for j in range(options.batch)]
        parts = batch_loss(model, [examples[i] for i in picked], embeddings[picked])
        optimiser.zero_grad()
        parts["loss"].backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        history.append(float(parts["token"].detach()))
        if options.progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(token=f"{sum(history[-20:]) / len(history[-20:]):.3f}")
    model.eval()
    return {
        "steps": options.steps,
        "batch": options.batch,
        "lr": options.lr,
        "seed": options.seed,
        "examples_seen": options.steps * options.batch,
        "train_examples": len(examples),
        "token_loss_first20": round(sum(history[:20]) / max(1, len(history[:20])), 4),
        "token_loss_last20": round(sum(history[-20:]) / max(1, len(history[-20:])), 4),
        "train_s": round(time.monotonic() - started, 1),
    }


def _letter_scores(logits: Tensor, letters: list[int], n_options: int) -> Tensor:
    return logits[letters[:n_options]]


def evaluate(model: MixtureOfThoughts, examples: Sequence[Example], progress: bool = True) -> dict[str, Any]:
    """Accuracy (highest letter logit) and answer-token loss of MoT, each expert alone, the
    router's top-1 without interaction, and a vote of the experts alone (summed letter
    probabilities)."""
    if not examples:
        raise ValueError("no evaluation examples")
    embeddings = embed(examples)
    letters = [letter_ids(e) for e in model.experts]
    names = [e.name for e in model.experts]
    methods = ["mot", "router-top1", *(f"alone:{n}" for n in names), "vote"]
    correct = dict.fromkeys(methods, 0)
    loss = dict.fromkeys(["mot", "router-top1", *(f"alone:{n}" for n in names)], 0.0)
    primaries = dict.fromkeys(names, 0)
    rows: Iterable[tuple[Example, Tensor]] = zip(examples, embeddings, strict=True)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, total=len(examples), desc="eval", unit="q")
    with torch.no_grad():
        for example, embedding in rows:
            gold = "ABCDEFGHIJ".index(example.answer)
            route = model.route(embedding)
            states, lasts = {}, {}
            for i, expert in enumerate(model.experts):
                states[i], lasts[i] = model.hidden_states(expert, example.prompt_ids[i])
            p = route.primary
            primaries[names[p]] += 1
            mot_last = model.primary_logits(
                model.experts[p], example.prompt_ids[p], model.peers(route, states)
            )[-1]
            answers = {"mot": (mot_last, p), "router-top1": (lasts[p], p)}
            answers.update({f"alone:{names[i]}": (lasts[i], i) for i in range(len(names))})
            vote = torch.zeros(example.n_options)
            for method, (logits, i) in answers.items():
                scores = _letter_scores(logits, letters[i], example.n_options)
                correct[method] += int(int(scores.argmax()) == gold)
                loss[method] += float(F.cross_entropy(logits[None], torch.tensor([example.answer_ids[i]])))
                if method.startswith("alone:"):
                    vote += torch.softmax(scores, dim=0)
            correct["vote"] += int(int(vote.argmax()) == gold)
    n = len(examples)
    chance = sum(1 / e.n_options for e in examples) / n
    return {
        "n": n,
        "chance": round(chance, 4),
        "accuracy": {m: round(c / n, 4) for m, c in correct.items()},
        "answer_token_loss": {m: round(v / n, 4) for m, v in loss.items()},
        "primary": primaries,
        "accuracy_stderr": round(math.sqrt(chance * (1 - chance) / n), 4),
    }
