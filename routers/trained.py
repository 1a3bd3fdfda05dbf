"""The shared base of routers that read a trained artifact and embed the query."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from coe.errors import CoeError, UserError
from coe.types import Messages
from routers.artifacts import Artifact, read_artifact, resolve
from routers.base import Router, RouterContext, RouterParams
from routers.embedding import Embedder, cache_dir, query_text
from routers.static_embedding import STATIC_NAME, StaticEmbedder

__all__ = ["TrainedParams", "TrainedRouter", "shared_embedder", "softmax"]


class TrainedParams(RouterParams):
    artifact: str = Field(description="trained artifact (JSON written by `coe train`), relative to the graph")
    cache: bool = Field(True, description="keep query embeddings in the on-disk cache ($COE_EMBED_CACHE)")
    threads: int = Field(1, ge=1, le=64, description="torch threads of the embedder")


@functools.cache
def shared_embedder(max_tokens: int, threads: int, cache: str) -> Embedder:
    """One embedder (one copy of the model) per setting in a process."""
    return Embedder(max_tokens=max_tokens, threads=threads, cache=Path(cache) if cache else None)


@functools.cache
def static_embedder(max_tokens: int) -> StaticEmbedder:
    """The distilled static embedding (one table per process)."""
    return StaticEmbedder(max_tokens=max_tokens)


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


class TrainedRouter(Router):
    """Loads ``params.artifact`` (of kind ``kind``) and keeps the artifact's experts that are in the
    graph's pool, in the artifact's order."""

    Params: ClassVar[type[RouterParams]] = TrainedParams
    kind: ClassVar[str] = ""

    def __init__(self, params: RouterParams, context: RouterContext) -> None:
        super().__init__(params, context)
        assert isinstance(params, TrainedParams)
        self.artifact = self._read(params, context)
        pool = set(context.experts)
        self.pool = [e for e in self.artifact.experts if not pool or e in pool]
        if not self.pool:
            raise UserError(f"{self.artifact.path}: none of its experts is in the graph's pool")
        self.setup()

    @classmethod
    def _read(cls, params: TrainedParams, context: RouterContext) -> Artifact:
        artifact = read_artifact(resolve(params.artifact, context.base_dir))
        if artifact.kind != cls.kind:
            raise UserError(
                f"{artifact.path}: a {artifact.kind!r} artifact; router {cls.name!r} needs {cls.kind!r}"
            )
        return artifact

    @classmethod
    def check(cls, params: RouterParams, context: RouterContext) -> list[tuple[tuple[str | int, ...], str]]:
        assert isinstance(params, TrainedParams)
        try:
            artifact = cls._read(params, context)
        except CoeError as err:
            return [(("artifact",), str(err))]
        if context.experts and not set(artifact.experts) & set(context.experts):
            return [(("artifact",), "none of the artifact's experts is in the graph's pool")]
        return []

    def setup(self) -> None:
        """Prepare what ``route`` needs from ``self.artifact`` (subclasses)."""

    def column(self, table: dict[str, Any]) -> NDArray[np.float32]:
        """``table[expert]`` for the pool's experts, as an array."""
        return np.array([float(table[e]) for e in self.pool], dtype=np.float32)

    @property
    def embedder(self) -> Embedder:
        params = self.params
        assert isinstance(params, TrainedParams)
        settings = self.artifact.meta.get("embedding", {})
        if settings.get("model") == STATIC_NAME:
            return static_embedder(int(settings.get("max_tokens", 512)))
        cache = str(cache_dir()) if params.cache else ""
        return shared_embedder(int(settings.get("max_tokens", 256)), params.threads, cache)

    async def vector(self, messages: Messages) -> NDArray[np.float32]:
        """The query's embedding (see ``routers.embedding.query_text`` for what is embedded)."""
        return await self.embedder.aembed(query_text(messages))
