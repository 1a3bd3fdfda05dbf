"""Mixture of Thoughts over frozen experts: a router, per-expert adapters into a shared latent,
and cross-attention from the primary expert to its peers at each interaction point.

Each expert's layers split into Q stacks (``MotExpertSpec.points``). After stack q, the active
experts' hidden states pass through their own adapter (LayerNorm + Linear) into the shared latent;
the primary's latent states attend (``heads`` heads) over each peer's, each peer's result is
scaled by its router weight (straight-through top-K: 1 forward, the softmax's gradient backward),
and the sum goes back to the primary's width through a zero-initialised projection and is added
to its residual stream by a forward hook. So an untrained MoT is exactly its primary expert, and
the experts' weights are never touched: only the router and the interaction layers train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from coe.mot.config import MotConfig
from coe.mot.experts import FrozenExpert

EMBED_DIM = 384  # all-MiniLM-L6-v2


@dataclass
class Route:
    """The router's decision for one query: the active experts (best first) and their weights."""

    probs: Tensor  # (E,) softmax over every expert, differentiable
    active: list[int]  # top-K expert indices, best first; active[0] is the primary

    @property
    def primary(self) -> int:
        return self.active[0]

    @property
    def peers(self) -> list[int]:
        return self.active[1:]

    def scale(self, index: int) -> Tensor:
        """Straight-through weight of an active expert: 1 forward, d(prob) backward."""
        p = self.probs[index]
        return 1.0 + p - p.detach()


@dataclass
class Memory:
    """A peer's keys and values at one interaction point, and its weight."""

    key: Tensor  # (1, heads, T, head_dim)
    value: Tensor
    scale: Tensor | float = 1.0


@dataclass
class Peers:
    """Every active peer's memories, per interaction point."""

    points: list[list[Memory]] = field(default_factory=list)


class Router(nn.Module):
    def __init__(self, experts: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(EMBED_DIM, hidden), nn.GELU(), nn.Linear(hidden, experts))

    def forward(self, embedding: Tensor) -> Tensor:
        return self.net(embedding)  # type: ignore[no-any-return]


class Interaction(nn.Module):
    """Adapters into the shared latent, cross-attention per point, zero-initialised outputs."""

    def __init__(self, config: MotConfig, widths: dict[str, int]) -> None:
        super().__init__()
        n_points = len(config.experts[0].points)
        latent = config.latent
        self.heads = config.heads
        self.adapters = nn.ModuleDict(
            {
                name: nn.ModuleList(
                    nn.Sequential(nn.LayerNorm(width), nn.Linear(width, latent)) for _ in range(n_points)
                )
                for name, width in widths.items()
            }
        )
        self.query = nn.ModuleList(nn.Linear(latent, latent) for _ in range(n_points))
        self.key = nn.ModuleList(nn.Linear(latent, latent) for _ in range(n_points))
        self.value = nn.ModuleList(nn.Linear(latent, latent) for _ in range(n_points))
        self.out = nn.ModuleDict(
            {
                name: nn.ModuleList(nn.Linear(latent, width) for _ in range(n_points))
                for name, width in widths.items()
            }
        )
        for projections in self.out.values():
            for linear in projections:  # type: ignore[attr-defined]
                assert isinstance(linear, nn.Linear)
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def memory(self, name: str, point: int, hidden: Tensor, scale: Tensor | float = 1.0) -> Memory:
        latent = self.adapters[name][point](hidden)  # type: ignore[index]
        return Memory(self._split(self.key[point](latent)), self._split(self.value[point](latent)), scale)

    def attend(self, name: str, point: int, hidden: Tensor, memories: Sequence[Memory]) -> Tensor:
        """What the primary ``name`` adds to its residual stream at ``point``."""
        query = self._split(self.query[point](self.adapters[name][point](hidden)))  # type: ignore[index]
        total: Tensor | None = None
        for memory in memories:
            attended = F.scaled_dot_product_attention(query, memory.key, memory.value) * memory.scale
            total = attended if total is None else total + attended
        assert total is not None
        batch, _, length, _ = total.shape
        merged = total.transpose(1, 2).reshape(batch, length, -1)
        return self.out[name][point](merged)  # type: ignore[index,no-any-return]


class MixtureOfThoughts(nn.Module):
    """The trainable part (router + interaction) over frozen experts that are not submodules."""

    def __init__(self, config: MotConfig, experts: Sequence[FrozenExpert]) -> None:
        super().__init__()
        self.config = config
        self._experts = list(experts)  # plain list: never in state_dict() or parameters()
        if [e.name for e in experts] != config.names:
            raise ValueError(f"experts {[e.name for e in experts]} do not match the config's {config.names}")
        self.router = Router(len(experts), config.router_hidden)
        self.interaction = Interaction(config, {e.name: e.width for e in experts})

    @property
    def experts(self) -> list[FrozenExpert]:
        return self._experts

    def route(self, embedding: Tensor) -> Route:
        probs = torch.softmax(self.router(embedding), dim=-1)
        active = torch.topk(probs.detach(), self.config.top_k).indices.tolist()
        return Route(probs, [int(i) for i in active])

    # --- the peers' side: frozen forward, then adapters -----------------------------------------

    def hidden_states(self, expert: FrozenExpert, ids: Sequence[int]) -> tuple[list[Tensor], Tensor]:
        """The expert's hidden states at its interaction points and its last-position logits."""
        with torch.no_grad():
            out = expert.model.model(input_ids=torch.tensor([list(ids)]), output_hidden_states=True)
            states = [out.hidden_states[p] for p in expert.spec.points]
            last = expert.model.lm_head(out.last_hidden_state[:, -1])[0]
        return states, last

    def peers(self, route: Route, states: dict[int, list[Tensor]], *, differentiable: bool = False) -> Peers:
        """Memories of the route's peers from their hidden states (``states[index]``)."""
        n_points = len(self.config.experts[0].points)
        peers = Peers([[] for _ in range(n_points)])
        for index in route.peers:
            name = self._experts[index].name
            scale: Tensor | float = route.scale(index) if differentiable else 1.0
            for point in range(n_points):
                peers.points[point].append(self.interaction.memory(name, point, states[index][point], scale))
        return peers

    # --- the primary's side: hooks on its frozen layers -----------------------------------------

    @contextlib.contextmanager
    def interacting(self, primary: FrozenExpert, peers: Peers | None) -> Iterator[None]:
        """While inside, the primary's layers at its interaction points attend to ``peers``."""
        handles = []
        if peers is not None and any(peers.points):
            for point, layer in enumerate(primary.spec.points):
                memories = peers.points[point]
                if memories:
                    hook = self._hook(primary.name, point, memories)
                    handles.append(primary.layers[layer - 1].register_forward_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, point: int, memories: list[Memory]) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            changed = hidden + self.interaction.attend(name, point, hidden, memories)
            return (changed, *output[1:]) if isinstance(output, tuple) else changed

        return hook

    def primary_logits(
        self, primary: FrozenExpert, ids: Sequence[int], peers: Peers | None, keep: int = 1
    ) -> Tensor:
        """The primary's logits at its last ``keep`` positions, interacting with ``peers``."""
        with self.interacting(primary, peers):
            out = primary.model(input_ids=torch.tensor([list(ids)]), logits_to_keep=keep)
        return out.logits[0]  # type: ignore[no-any-return]


def trainable_state(model: MixtureOfThoughts) -> dict[str, Tensor]:
    """What a checkpoint holds: the router and the interaction layers only."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}
