"""The static embedding distilled from the packaged MiniLM (fast routing): built locally, unit
vectors, a query in well under a millisecond, and the MiniLM neighbourhood roughly kept."""

from __future__ import annotations

import time

import numpy as np
from routers_data import SLICE

from routers.embedding import Embedder
from routers.static_embedding import STATIC_NAME, StaticEmbedder, distill


def committed() -> tuple[list[str], np.ndarray]:
    with np.load(SLICE / "embeddings.npz") as data:
        return [str(t) for t in data["texts"]][:210], data["vectors"][:210]


def test_static_embedding_is_fast_and_keeps_neighbours() -> None:
    assert distill().name == f"{STATIC_NAME}.npz"  # built by `coe prepare` (or now, ~1-2 min, once)
    texts, minilm = committed()
    embedder = StaticEmbedder()
    assert isinstance(embedder, Embedder) and embedder.model_name == STATIC_NAME
    vectors = embedder.embed(texts)
    assert vectors.shape == (210, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    started = time.perf_counter()
    for text in texts[:50]:
        embedder.compute([text])
    assert (time.perf_counter() - started) / 50 < 0.05  # ~0.3 ms on a quiet core; loose for CI
    # each question's nearest other question by MiniLM is among its 10 nearest by the static table
    # for most questions
    near_m = np.argsort(-(minilm @ minilm.T), axis=1)[:, 1]
    near_s = np.argsort(-(vectors @ vectors.T), axis=1)[:, 1:11]
    kept = np.mean([near_m[i] in near_s[i] for i in range(210)])
    assert kept > 0.4, kept  # 0.50 measured
