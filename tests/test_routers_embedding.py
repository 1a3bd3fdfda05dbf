"""The embedder: the real all-MiniLM-L6-v2 (offline) agrees with the committed slice vectors;
the cache serves known texts without loading the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from routers_data import SLICE

from routers.embedding import Embedder, EmbeddingCache


def committed() -> tuple[str, list[str], np.ndarray]:
    with np.load(SLICE / "embeddings.npz") as data:
        return str(data["model_key"]), [str(t) for t in data["texts"]], data["vectors"]


def test_real_model_matches_the_committed_vectors() -> None:
    model_key, texts, vectors = committed()
    embedder = Embedder()
    assert embedder.model_key == model_key
    picked = [0, 209, len(texts) - 1]  # two questions and a skill keyword
    fresh = embedder.compute([texts[i] for i in picked])
    assert fresh.shape == (3, 384) and fresh.dtype == np.float32
    assert np.allclose(np.linalg.norm(fresh, axis=1), 1, atol=1e-5)
    cosine = (fresh * vectors[picked]).sum(axis=1)
    assert cosine.min() > 0.999


def test_cache_serves_known_texts_without_the_model(tmp_path: Path) -> None:
    model_key, texts, vectors = committed()
    cache = EmbeddingCache(tmp_path, model_key)
    cache.put(texts[:5], vectors[:5])
    assert set(cache.get([*texts[:3], "unknown"])) == set(texts[:3])
    embedder = Embedder(cache=tmp_path)
    out = embedder.embed([texts[4], texts[0], texts[4]])
    assert np.array_equal(out, vectors[[4, 0, 4]])
    assert embedder._model is None  # never loaded
    assert Embedder(max_tokens=128, cache=tmp_path).cache.path != cache.path  # type: ignore[union-attr]
