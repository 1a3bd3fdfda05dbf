"""Multiple-choice questions and their loaders: MMLU-Pro, GPQA and a simple CSV layout.

Every loader returns :class:`Question` objects whose ``answer`` is the gold letter of
``options``. Heavy or optional libraries (``pyarrow``, ``datasets``) are imported when a loader
needs them, never at import time.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import json
import random
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coe.errors import UserError
from coe.questions.extract import LETTERS

__all__ = [
    "GPQA_PASSWORD",
    "GpqaSubset",
    "Question",
    "load_csv",
    "load_gpqa",
    "load_mmlu_pro",
    "load_validation_shots",
    "questions_by_id",
]

GPQA_PASSWORD = b"deserted-untie-orchid"
"""The password GPQA's authors publish for their zip (it only keeps the text off crawlers)."""

GpqaSubset = Literal["main", "diamond", "extended"]

_NA_OPTION = "N/A"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".csv")


@dataclass(frozen=True, slots=True)
class Question:
    """One multiple-choice question; ``answer`` is the gold letter (``"A"``…``"J"``)."""

    question_id: int
    question: str
    options: tuple[str, ...]
    answer: str
    category: str
    src: str = ""
    cot_content: str = ""

    def metadata(self) -> dict[str, object]:
        """What a replay expert needs to find this question's recorded answer (never read by routers)."""
        return {"question_id": self.question_id, "question": self.question}


# --- MMLU-Pro -------------------------------------------------------------------------------


def load_mmlu_pro(path_or_hub_id: str | Path, split: str = "test") -> list[Question]:
    """Load MMLU-Pro in the Hugging Face layout.

    ``path_or_hub_id`` is a ``.parquet`` or ``.jsonl[.gz]`` file, a directory holding
    ``{split}.parquet`` or ``{split}.jsonl[.gz]``, or a hub id such as ``TIGER-Lab/MMLU-Pro``
    (needs the ``datasets`` library and the network or its cache).

    Options equal to ``"N/A"`` (padding in older releases) are dropped, as MMLU-Pro's own
    harness does, and the gold letter is moved to the answer's new position.
    """
    return [_mmlu_question(row) for row in _mmlu_rows(path_or_hub_id, split)]


def load_validation_shots(path_or_hub_id: str | Path) -> dict[str, list[Question]]:
    """MMLU-Pro's validation split grouped by category, in file order (5 per category)."""
    shots: dict[str, list[Question]] = {}
    for question in load_mmlu_pro(path_or_hub_id, split="validation"):
        shots.setdefault(question.category, []).append(question)
    return shots


def _mmlu_rows(source: str | Path, split: str) -> Iterator[Mapping[str, Any]]:
    path = Path(source)
    if path.is_dir():
        path = _split_file(path, split)
    if path.is_file():
        return _read_rows(path)
    text = str(source)
    if _HUB_ID.fullmatch(text) and not text.endswith(_DATA_SUFFIXES):
        return _hub_rows(text, split)
    raise UserError(f"MMLU-Pro data not found: {text!r} is neither a file nor a hub id")


def _split_file(directory: Path, split: str) -> Path:
    for suffix in (".parquet", ".jsonl", ".jsonl.gz"):
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise UserError(f"no {split}.parquet or {split}.jsonl in {directory}")


def _read_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    name = path.name
    if name.endswith(".parquet"):
        return _parquet_rows(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl_rows(path)
    raise UserError(f"{path}: expected a .parquet or .jsonl[.gz] file")


def _parquet_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    import pyarrow.parquet as pq

    columns: dict[str, list[Any]] = pq.read_table(path).to_pydict()
    names = list(columns)
    for values in zip(*(columns[name] for name in names), strict=True):
        yield dict(zip(names, values, strict=True))


def _jsonl_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not JSON: {err.msg}") from err
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object")
            yield row


def _hub_rows(hub_id: str, split: str) -> Iterator[Mapping[str, Any]]:
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as err:
        raise UserError(
            f"{hub_id!r} is not a local file; loading it from the Hugging Face hub needs the "
            "'datasets' library (pip install datasets), or pass a local parquet/jsonl path"
        ) from err
    try:
        rows = datasets.load_dataset(hub_id, split=split)
    except Exception as err:  # any hub failure (offline, no such split) is the user's to fix
        raise UserError(f"could not load {hub_id!r} split {split!r} from the hub: {err}") from err
    return iter(rows)


def _mmlu_question(row: Mapping[str, Any]) -> Question:
    try:
        qid = int(row["question_id"])
        gold = str(row["answer"]).strip()
        raw = [str(option) for option in row["options"]]
        question = str(row["question"])
    except KeyError as err:
        raise UserError(f"MMLU-Pro row without the {err} column") from err
    if not _is_letter(gold, len(raw)):
        raise UserError(f"MMLU-Pro question {qid}: answer {gold!r} is not one of its options")
    if raw[LETTERS.index(gold)] == _NA_OPTION:
        raise UserError(f"MMLU-Pro question {qid}: its gold option is 'N/A'")
    kept_before = sum(option != _NA_OPTION for option in raw[: LETTERS.index(gold)])
    return Question(
        question_id=qid,
        question=question,
        options=tuple(option for option in raw if option != _NA_OPTION),
        answer=LETTERS[kept_before],
        category=str(row.get("category") or ""),
        src=str(row.get("src") or ""),
        cot_content=str(row.get("cot_content") or ""),
    )


def _is_letter(answer: str, n_options: int) -> bool:
    return len(answer) == 1 and answer in LETTERS[:n_options]


# --- GPQA -----------------------------------------------------------------------------------


def load_gpqa(
    zip_path: str | Path,
    subset: GpqaSubset = "main",
    seed: int = 0,
    password: bytes = GPQA_PASSWORD,
) -> list[Question]:
    """Load a GPQA subset from its authors' password-protected zip, in memory only.

    ``question_id`` is the row index, ``category`` the "High-level domain" column and ``src``
    the "Subdomain". The correct answer and the three incorrect ones are shuffled per question
    with ``random.Random(f"{seed}:{row_index}")``, so the order does not depend on the subset
    size or on other questions.
    """
    if subset not in ("main", "diamond", "extended"):
        raise UserError(f"unknown GPQA subset {subset!r}; expected main, diamond or extended")
    text = _read_zip_member(Path(zip_path), f"gpqa_{subset}.csv", password)
    rows = csv.DictReader(io.StringIO(text))
    return [_gpqa_question(index, row, seed) for index, row in enumerate(rows)]


def _read_zip_member(zip_path: Path, basename: str, password: bytes) -> str:
    if not zip_path.is_file():
        raise UserError(f"GPQA zip not found: {zip_path}")
    with zipfile.ZipFile(zip_path) as archive:
        names = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == basename]
        if not names:
            raise UserError(f"{zip_path} holds no {basename}")
        try:
            data = archive.read(names[0], pwd=password)
        except RuntimeError as err:
            raise UserError(f"{zip_path}: cannot decrypt {basename}: {err}") from err
    return data.decode("utf-8-sig")


def _gpqa_question(index: int, row: Mapping[str, str], seed: int) -> Question:
    answers = [row["Correct Answer"].strip()]
    answers += [row[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)]
    order = list(range(len(answers)))
    random.Random(f"{seed}:{index}").shuffle(order)
    return Question(
        question_id=index,
        question=row["Question"].strip(),
        options=tuple(answers[i] for i in order),
        answer=LETTERS[order.index(0)],
        category=row["High-level domain"].strip(),
        src=(row.get("Subdomain") or "").strip(),
    )


# --- CSV ------------------------------------------------------------------------------------


def load_csv(path: str | Path) -> list[Question]:
    """Load a simple CSV: ``question``, options as columns ``A``..``J`` or one ``options``
    column (a JSON list), ``answer`` (a letter), optional ``question_id`` (default: the row
    index) and ``category``."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"CSV file not found: {file}")
    with file.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "question" not in rows[0]:
        raise UserError(f"{file}: no 'question' column")
    # line 1 is the header; a row's line is approximate when a field spans lines
    return [_csv_question(file, index, row) for index, row in enumerate(rows)]


def _csv_question(file: Path, index: int, row: Mapping[str, str]) -> Question:
    where = f"{file}:{index + 2}"
    options = _csv_options(where, row)
    answer = (row.get("answer") or "").strip().upper()
    if not _is_letter(answer, len(options)):
        raise UserError(f"{where}: answer {answer!r} is not the letter of one of its options")
    raw_id = (row.get("question_id") or "").strip()
    try:
        qid = int(raw_id) if raw_id else index
    except ValueError as err:
        raise UserError(f"{where}: question_id {raw_id!r} is not an integer") from err
    return Question(
        question_id=qid,
        question=row["question"].strip(),
        options=options,
        answer=answer,
        category=(row.get("category") or "").strip(),
        src=(row.get("src") or "").strip(),
    )


def _csv_options(where: str, row: Mapping[str, str]) -> tuple[str, ...]:
    if row.get("options"):
        try:
            parsed = json.loads(row["options"])
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: 'options' is not a JSON list: {err.msg}") from err
        if not isinstance(parsed, list) or not parsed:
            raise UserError(f"{where}: 'options' must be a non-empty JSON list")
        return tuple(str(option).strip() for option in parsed)
    options = _leading_nonempty(row.get(letter) for letter in LETTERS)
    if len(options) < 2:
        raise UserError(f"{where}: needs an 'options' column or columns A, B, ...")
    return options


def _leading_nonempty(values: Iterable[str | None]) -> tuple[str, ...]:
    kept: list[str] = []
    for value in values:
        if value is None or not value.strip():
            break
        kept.append(value.strip())
    return tuple(kept)


def questions_by_id(questions: Sequence[Question]) -> dict[int, Question]:
    """Index questions by id; raise ``UserError`` on a duplicate id."""
    index: dict[int, Question] = {}
    for question in questions:
        if question.question_id in index:
            raise UserError(f"duplicate question_id {question.question_id}")
        index[question.question_id] = question
    return index
