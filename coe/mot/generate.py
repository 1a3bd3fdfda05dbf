"""Generating with a MoT: route the query, run the peers once on the prompt, then decode with the
primary alone (its own KV cache) while its hooks attend to the peers' fixed latent states.

This departs from the paper, where peers and primary interact at every decoding step: here the
peers see the prompt only (in their own tokenisation), so a generated token costs one primary step
and no peer step, and the peers need no KV cache of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from coe.mot.model import MixtureOfThoughts, Peers, Route
from coe.types import Messages


@dataclass(frozen=True)
class Finished:
    """The end of a generation: token counts, why it stopped, and the route taken."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    primary: str
    peers: tuple[str, ...]
    weights: dict[str, float] = field(default_factory=dict)


class Generator:
    """Thread-safe text generation over one MoT (one generation at a time: hooks are per model)."""

    def __init__(self, model: MixtureOfThoughts) -> None:
        from routers.embedding import Embedder

        self.model = model
        self.embedder = Embedder()
        self._lock = threading.Lock()

    def route(self, messages: Messages) -> Route:
        from routers.embedding import query_text

        vector = self.embedder.embed([query_text(messages) or messages[-1]["content"]])
        with torch.no_grad():
            return self.model.route(torch.from_numpy(vector[0].copy()))

    def generate(  # noqa: C901 - one decoding loop, read at once
        self,
        messages: Messages,
        max_tokens: int,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        interact: bool = True,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Finished]:
        """Yield text pieces as they are decoded, then one ``Finished``. ``interact=False`` runs
        the routed primary alone; ``cancel`` stops between tokens."""
        if not messages:
            raise ValueError("no messages")
        with self._lock, torch.no_grad():
            route = self.route(messages)
            primary = self.model.experts[route.primary]
            prompt_tokens = 0
            peers: Peers | None = None
            if interact and route.peers:
                states = {}
                for i in route.peers:
                    ids = self.model.experts[i].prompt_ids(messages)
                    prompt_tokens += len(ids)
                    states[i] = self.model.hidden_states(self.model.experts[i], ids)[0]
                peers = self.model.peers(route, states)
            ids = primary.prompt_ids(messages)
            prompt_tokens += len(ids)
            generator = torch.Generator().manual_seed(seed if seed is not None else 0)
            tokens: list[int] = []
            text = ""
            finish = "length"
            with self.model.interacting(primary, peers):
                out = primary.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
                while len(tokens) < max_tokens:
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    logits = out.logits[0, -1]
                    if temperature > 0:
                        probs = torch.softmax(logits / temperature, dim=-1)
                        token = int(torch.multinomial(probs, 1, generator=generator))
                    else:
                        token = int(logits.argmax())
                    if token in primary.eos_ids:
                        finish = "stop"
                        break
                    tokens.append(token)
                    decoded = primary.tokenizer.decode(tokens, skip_special_tokens=True)
                    if not decoded.endswith("\ufffd") and len(decoded) > len(text):
                        piece, text = decoded[len(text) :], decoded
                        cut = _stop_at(text, stop)
                        if cut is not None:
                            piece = piece[: max(0, len(piece) - (len(text) - cut))]
                            if piece:
                                yield piece
                            finish = "stop"
                            break
                        yield piece
                    out = primary.model(input_ids=torch.tensor([[token]]), cache=out.cache, use_cache=True)
            names = [e.name for e in self.model.experts]
            yield Finished(
                prompt_tokens,
                len(tokens),
                finish,
                primary.name,
                tuple(names[i] for i in route.peers) if interact else (),
                {names[i]: round(float(route.probs[i]), 4) for i in route.active},
            )


def _stop_at(text: str, stop: Sequence[str]) -> int | None:
    cuts = [text.find(s) for s in stop if s and s in text]
    return min(cuts) if cuts else None
