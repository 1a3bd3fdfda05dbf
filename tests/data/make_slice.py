"""Make the small MMLU-Pro slice committed under tests/data/mmlu_pro (see tests/data/README.md).

    .venv/bin/python tests/data/make_slice.py [--source ../shared/data/mmlu_pro]
        [--tools ../shared/tools] [--per-category 15]

Picks, in every category, the ``--per-category`` test questions with the smallest
sha256(question_id) among those all three models answered, and writes their rows, the whole
validation split, the three models' outputs on them, a trimmed models.json and the accuracies
the independent reference tool computes on the slice.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MODELS = ("Meta-Llama-3_1-8B-Instruct", "gemma-7b", "Mistral-7B-Instruct-v0.2")
HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[2] / "shared/data/mmlu_pro")
    parser.add_argument("--tools", type=Path, default=HERE.parents[2] / "shared/tools")
    parser.add_argument("--out", type=Path, default=HERE / "mmlu_pro")
    parser.add_argument("--per-category", type=int, default=15)
    args = parser.parse_args()

    outputs = {m: _read_outputs(args.source / "outputs" / f"{m}.jsonl.gz") for m in MODELS}
    answered = set.intersection(*(set(records) for records in outputs.values()))
    test_rows = pq.read_table(args.source / "test.parquet").to_pylist()
    rows = _pick([r for r in test_rows if r["question_id"] in answered], args.per_category)
    ids = {row["question_id"] for row in rows}

    out: Path = args.out
    (out / "outputs").mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "test_slice.jsonl", rows)
    _write_jsonl(out / "validation.jsonl", pq.read_table(args.source / "validation.parquet").to_pylist())
    for model, records in outputs.items():
        _write_gzip_jsonl(out / "outputs" / f"{model}.jsonl.gz", (records[i] for i in sorted(ids)))
    _write_models(args.source / "outputs" / "models.json", out / "outputs" / "models.json")
    accuracy = _reference_accuracy(args.tools / "reference_accuracy.py", rows, out / "outputs")
    (out / "expected_accuracy.json").write_text(json.dumps(accuracy, indent=1) + "\n")
    print(f"{len(rows)} questions in {len({r['category'] for r in rows})} categories -> {out}")


def _pick(rows: list[dict[str, Any]], per_category: int) -> list[dict[str, Any]]:
    def rank(row: dict[str, Any]) -> str:
        return hashlib.sha256(str(row["question_id"]).encode()).hexdigest()

    picked: list[dict[str, Any]] = []
    for category in sorted({row["category"] for row in rows}):
        in_category = sorted((r for r in rows if r["category"] == category), key=rank)
        picked += in_category[:per_category]
    return sorted(picked, key=lambda row: int(row["question_id"]))


def _read_outputs(path: Path) -> dict[int, dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        records = (json.loads(line) for line in lines)
        return {int(record["question_id"]): record for record in records}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _write_gzip_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        packed.write(data)  # mtime=0 and no file name: the same input gives the same bytes


def _write_models(source: Path, target: Path) -> None:
    full = json.loads(source.read_text())
    trimmed = {key: value for key, value in full.items() if key != "models"}
    trimmed["models"] = {name: full["models"][name] for name in MODELS}
    target.write_text(json.dumps(trimmed, indent=1) + "\n")


def _reference_accuracy(tool: Path, rows: list[dict[str, Any]], replay: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "test_slice.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        command = [sys.executable, str(tool), str(parquet), str(replay), *MODELS]
        printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    models: dict[str, Any] = {}
    for line in printed.splitlines():
        model, n, correct, accuracy, unparsable = line.split("\t")
        models[model] = {
            "n": int(n),
            "correct": int(correct),
            "accuracy": float(accuracy),
            "unparsable": int(unparsable),
        }
    return {"tool": "shared/tools/reference_accuracy.py", "models": models}


if __name__ == "__main__":
    main()
