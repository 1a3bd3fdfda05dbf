"""Write ``mmlu_pro/embeddings.npz``: the routers' query embeddings of the slice's 210 questions
and of the skill keywords its ``src`` labels give (what training Symbolic-MoE on the slice embeds).

Tests seed a temporary embedding cache from it, so routing the slice never loads torch. Run from
the repository root with the project's venv (uses ~/.cache/coe/embeddings when it has them)::

    .venv/bin/python tests/data/make_embeddings.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from coe.routing.data import load_questions, routing_text
from coe.routing.train import skill_name
from routers.embedding import Embedder, cache_dir

HERE = Path(__file__).resolve().parent / "mmlu_pro"


def main() -> None:
    questions = sorted(load_questions(HERE / "test_slice.jsonl").values(), key=lambda q: q.question_id)
    texts = [routing_text(q) for q in questions]
    texts += sorted({skill_name(q.src) for q in questions})
    embedder = Embedder(cache=cache_dir())
    vectors = embedder.embed(texts)
    assert embedder.cache is not None
    keys = np.array([embedder.cache.key(t) for t in texts])
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        model_key=np.array(embedder.model_key),
        keys=keys,
        texts=np.array(texts),
        vectors=vectors,
    )
    (HERE / "embeddings.npz").write_bytes(buffer.getvalue())
    print(f"wrote {HERE / 'embeddings.npz'}: {vectors.shape}")


if __name__ == "__main__":
    main()
