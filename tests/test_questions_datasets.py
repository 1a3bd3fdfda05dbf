"""Dataset loaders: MMLU-Pro (jsonl, parquet, directory, hub id), validation shots, CSV, GPQA.

The GPQA test reads its authors' zip from ../shared and never prints or compares question text
(its authors ask that it never appear in plain text online).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coe.errors import UserError
from coe.questions.datasets import (
    GpqaSubset,
    Question,
    load_csv,
    load_gpqa,
    load_mmlu_pro,
    load_validation_shots,
)
from coe.questions.extract import LETTERS

DATA = Path(__file__).parent / "data" / "mmlu_pro"
SLICE = DATA / "test_slice.jsonl"
GPQA_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpqa" / "dataset.zip"


def raw_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_load_slice() -> None:
    questions = load_mmlu_pro(SLICE)
    assert len(questions) == 210
    assert collections.Counter(q.category for q in questions) == {
        c: 15 for c in {q.category for q in questions}
    }
    assert len({q.category for q in questions}) == 14
    assert len({q.question_id for q in questions}) == 210
    for question in questions:
        assert question.answer in LETTERS[: len(question.options)]
        assert "N/A" not in question.options
        assert question.src and question.question


def test_gold_letter_comes_from_answer_column() -> None:
    rows = {row["question_id"]: row for row in raw_rows(SLICE)}
    for question in load_mmlu_pro(SLICE):
        assert question.answer == rows[question.question_id]["answer"]


def test_parquet_and_directory_load_the_same(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(raw_rows(SLICE)), tmp_path / "test.parquet")
    from_parquet = load_mmlu_pro(tmp_path / "test.parquet")
    assert from_parquet == load_mmlu_pro(SLICE)
    assert load_mmlu_pro(tmp_path) == from_parquet  # a directory holding {split}.parquet
    assert len(load_mmlu_pro(DATA, split="validation")) == 70  # a directory holding validation.jsonl


def test_validation_shots_drop_na_padding() -> None:
    shots = load_validation_shots(DATA)
    assert len(shots) == 14 and all(len(s) == 5 for s in shots.values())
    rows = {row["question_id"]: row for row in raw_rows(DATA / "validation.jsonl")}
    padded = 0
    for category, questions in shots.items():
        for shot in questions:
            row = rows[shot.question_id]
            options = row["options"]
            assert isinstance(options, list)
            padded += "N/A" in options
            assert shot.category == category
            assert shot.options == tuple(o for o in options if o != "N/A")
            assert shot.options[LETTERS.index(shot.answer)] == options[LETTERS.index(str(row["answer"]))]
            assert shot.cot_content.startswith("A: Let's think step by step.")
    assert padded == 21


def test_na_before_the_gold_option_moves_the_letter(tmp_path: Path) -> None:
    row = {"question_id": 7, "question": "q?", "options": ["x", "N/A", "y", "z"], "answer": "C"}
    path = tmp_path / "padded.jsonl"
    path.write_text(json.dumps({**row, "category": "math"}) + "\n")
    (question,) = load_mmlu_pro(path)
    assert question.options == ("x", "y", "z")
    assert question.answer == "B" and question.options[1] == "y"


@pytest.mark.parametrize("answer", ["D", "", "AB"])
def test_bad_answer_letter(tmp_path: Path, answer: str) -> None:
    path = tmp_path / "bad.jsonl"
    row = {"question_id": 1, "question": "q", "options": ["a", "b", "c"], "answer": answer}
    path.write_text(json.dumps(row))
    with pytest.raises(UserError, match="question 1"):
        load_mmlu_pro(path)


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question_id": 1, "options": ["a", "b"], "answer": "A"}) + "\n")
    with pytest.raises(UserError, match="'question' column"):
        load_mmlu_pro(path)


def test_hub_id_without_datasets_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # importing it now raises ImportError
    with pytest.raises(UserError, match="datasets"):
        load_mmlu_pro("TIGER-Lab/MMLU-Pro")


def test_missing_file() -> None:
    with pytest.raises(UserError, match="not found"):
        load_mmlu_pro("no/such/test.parquet")


def test_load_csv_letter_columns(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("question_id,question,A,B,C,D,answer,category\n5,Two plus two?,3,4,5,,b,math\n")
    (question,) = load_csv(path)
    assert question == Question(5, "Two plus two?", ("3", "4", "5"), "B", "math")


def test_load_csv_options_column(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('question,options,answer\n"Pick one","[""x"", ""y""]",A\n')
    (question,) = load_csv(path)
    assert question.question_id == 0 and question.options == ("x", "y") and question.answer == "A"


def test_load_csv_bad_answer(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("question,A,B,answer\nq,x,y,C\n")
    with pytest.raises(UserError, match=r"q\.csv:2"):
        load_csv(path)


def fingerprint(*texts: str) -> str:
    """A hash of GPQA text, so assertions compare it without ever showing it."""
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


def digest(question: Question) -> str:
    return fingerprint(*question.options)


@functools.cache
def gpqa(subset: GpqaSubset, seed: int = 0) -> tuple[Question, ...]:
    return tuple(load_gpqa(GPQA_ZIP, subset=subset, seed=seed))


@pytest.mark.skipif(not GPQA_ZIP.is_file(), reason=f"GPQA zip not available at {GPQA_ZIP}")
def test_gpqa_subsets() -> None:
    counts = {}
    subsets: tuple[GpqaSubset, ...] = ("main", "diamond", "extended")
    for subset in subsets:
        questions = gpqa(subset)
        counts[subset] = len(questions)
        assert [q.question_id for q in questions] == list(range(len(questions)))
        assert {len(q.options) for q in questions} == {4}
        assert {q.category for q in questions} == {"Physics", "Chemistry", "Biology"}
        assert sum(q.question != q.question.strip() for q in questions) == 0
    assert counts == {"main": 448, "diamond": 198, "extended": 546}


@pytest.mark.skipif(not GPQA_ZIP.is_file(), reason=f"GPQA zip not available at {GPQA_ZIP}")
def test_gpqa_shuffle_is_deterministic_and_tracks_the_answer() -> None:
    first = gpqa("diamond")
    again = load_gpqa(GPQA_ZIP, subset="diamond", seed=0)
    other = gpqa("diamond", seed=1)
    assert [digest(q) for q in first] == [digest(q) for q in again]
    assert [q.answer for q in first] == [q.answer for q in again]
    moved = sum(digest(a) != digest(b) for a, b in zip(first, other, strict=True))
    assert moved > len(first) // 2
    for a, b in zip(first, other, strict=True):
        assert fingerprint(*sorted(a.options)) == fingerprint(*sorted(b.options))
        gold_a = a.options[LETTERS.index(a.answer)]
        gold_b = b.options[LETTERS.index(b.answer)]
        assert fingerprint(gold_a) == fingerprint(gold_b)
    spread = collections.Counter(q.answer for q in gpqa("main"))
    assert set(spread) == set("ABCD")
    assert all(448 * 0.15 < n < 448 * 0.35 for n in spread.values()), spread


def test_gpqa_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_gpqa(tmp_path / "missing.zip")
    with pytest.raises(UserError, match="subset"):
        load_gpqa(tmp_path / "missing.zip", subset="tiny")  # type: ignore[arg-type]
