"""Fixtures of the router tests (a pytest plugin: ``pytest_plugins = ["routers_support"]``): the
committed MMLU-Pro slice (210 dev questions, three replayed models), its profile, artifacts
trained on it, and an embedding cache seeded from ``embeddings.npz`` so routing the slice never
loads torch (``test_routers_embedding.py`` checks that the real model agrees).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from routers_data import MODELS, OUTPUTS, SLICE

from coe.questions.datasets import Question, load_validation_shots
from coe.routing.data import load_questions
from coe.routing.profiles import Profile, build_from_replay
from coe.routing.train import TrainData, train
from routers.artifacts import write_artifact
from routers.embedding import Embedder, EmbeddingCache


@pytest.fixture(scope="session")
def seeded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the slice's query embeddings."""
    directory = tmp_path_factory.mktemp("embeddings")
    with np.load(SLICE / "embeddings.npz") as data:
        cache = EmbeddingCache(directory, str(data["model_key"]))
        cache.put_keys([str(k) for k in data["keys"]], data["vectors"])
        cache.close()
    return directory


@pytest.fixture
def embed_cache(seeded_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Routers built in this test read query embeddings from the seeded cache."""
    monkeypatch.setenv("COE_EMBED_CACHE", str(seeded_cache))
    return seeded_cache


@pytest.fixture(scope="session")
def questions() -> dict[int, Question]:
    return load_questions(SLICE / "test_slice.jsonl")


@pytest.fixture(scope="session")
def profile(questions: dict[int, Question]) -> Profile:
    shots = load_validation_shots(SLICE / "validation.jsonl")
    return build_from_replay(OUTPUTS, list(questions.values()), MODELS, shots)


@pytest.fixture(scope="session")
def data(profile: Profile, questions: dict[int, Question], seeded_cache: Path) -> TrainData:
    from coe.routing.data import routing_text

    embedder = Embedder(cache=seeded_cache)
    vectors = embedder.embed([routing_text(questions[q]) for q in profile.question_ids])
    return TrainData(profile, vectors, embedder, MODELS)


@pytest.fixture(scope="session")
def artifacts(data: TrainData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One artifact of each kind, trained on the whole slice."""
    folder = tmp_path_factory.mktemp("artifacts")
    out = {}
    for kind in ("category", "correctness", "skills", "answers"):
        meta, arrays = train(kind, data)
        write_artifact(folder / f"{kind}.json", meta, arrays, f"(test: {kind} on the slice)")
        out[kind] = folder / f"{kind}.json"
    return out


@pytest.fixture
def slice_data_dir(tmp_path: Path) -> Iterator[Path]:
    """The slice as a data folder ``coe eval`` reads (test questions + validation beside them)."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(SLICE / "test_slice.jsonl", folder / "test.jsonl")
    shutil.copy(SLICE / "validation.jsonl", folder / "validation.jsonl")
    yield folder
