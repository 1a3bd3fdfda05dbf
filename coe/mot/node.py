"""``mot``: a node whose answer is one Mixture-of-Thoughts generation (``coe.mot``).

Its experts are in-process torch models outside the configured pool; they load on the node's
first call (``preload: true``: as soon as the graph is built, in the background). A graph whose
checkpoint is missing is skipped at start with the reason (``unavailable``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from coe.experts.base import Emit
from coe.graph.nodes.base import BuildContext, NodeKind, NodeParams
from coe.graph.state import GraphState
from coe.mot.expert import MotExpert
from coe.pipeline import Job, Trace, fan_out


class MotParams(NodeParams):
    checkpoint: Path = Field(
        Path("../config/mot/mot.json"), description="MoT config JSON, relative to the graph"
    )
    name: str = Field("mot", description="the expert's name in traces and usage")
    interact: bool = Field(True, description="false: the routed primary alone (an ablation)")
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    threads: int = Field(1, gt=0, description="torch threads (1 is fastest on a busy machine)")
    preload: bool = Field(False, description="load the models when the graph is built, not on first call")


def _models_cache() -> Path:
    return Path(os.environ.get("COE_MODELS_DIR") or "~/.cache/coe/models").expanduser()


def checkpoint_path(params: MotParams, base_dir: Path) -> Path:
    path = params.checkpoint.expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


class MotNode(NodeKind):
    Params = MotParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, MotParams)
        self.expert = MotExpert(
            params.name,
            checkpoint_path(params, context.base_dir),
            _models_cache(),
            interact=params.interact,
            threads=params.threads,
        )
        self._preload: asyncio.Task[Any] | None = None
        if params.preload:
            try:
                self._preload = asyncio.get_running_loop().create_task(self.expert.load())
            except RuntimeError:  # no loop yet: the first call loads
                self._preload = None

    @classmethod
    def unavailable(cls, params: NodeParams, base_dir: Path) -> str | None:
        """Why this node cannot serve (its checkpoint is missing), without loading anything."""
        from coe.mot.checkpoint import missing

        assert isinstance(params, MotParams)
        return missing(checkpoint_path(params, base_dir))

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, MotParams)
        run = state["params"]
        run = dataclasses.replace(
            run,
            max_tokens=params.max_tokens or run.max_tokens,
            temperature=params.temperature if params.temperature is not None else run.temperature,
        )
        trace = Trace(self.context.graph)
        job = Job(self.expert, list(state["messages"]), "answer", emit)
        candidates = await fan_out([job], run, trace, self.name)
        return {
            "latest": candidates,
            "history": candidates,
            "selected": [],
            "aggregate": None,
            "calls": trace.calls,
        }
