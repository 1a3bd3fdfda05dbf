"""``results.jsonl`` (one line per question, appended as answers arrive, resumable) and ``summary.json``."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """Rows already written, by question_id. A torn last line (killed mid-write) is ignored."""
    rows: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[int(row["question_id"])] = row
    return rows


class ResultWriter:
    """Appends rows, each flushed as written, so a killed run resumes from every finished answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def __enter__(self) -> ResultWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_line()
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def _truncate_torn_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write(self, row: Mapping[str, Any]) -> None:
        assert self._handle is not None
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


#: what ``roles`` sums per role; and the order roles are listed in
ROLE_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "cost", "latency_s")
ROLE_ORDER = {r: i for i, r in enumerate(("answer", "propose", "roles", "judge", "aggregate", "annotate"))}


def _accuracy(correct: int, n: int) -> float:
    return round(correct / n, 6) if n else 0.0


def summarize(rows: Iterable[Mapping[str, Any]], **fields: Any) -> dict[str, Any]:
    """Summary numbers computed from the rows alone, so a resumed run equals an uninterrupted one."""
    rows = sorted(rows, key=lambda r: r["question_id"])
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    calls: Counter[str] = Counter()
    prompt = completion = 0
    cost = 0.0
    roles: dict[str, dict[str, float]] = {}
    for row in rows:
        for role, usage in row.get("roles", {}).items():
            total = roles.setdefault(role, dict.fromkeys(ROLE_FIELDS, 0))
            for key in ROLE_FIELDS:
                total[key] += usage[key]
        cat = per_cat[row["category"]]
        cat[0] += 1
        cat[1] += bool(row["correct"])
        calls.update(row["experts"])
        prompt += row["usage"]["prompt_tokens"]
        completion += row["usage"]["completion_tokens"]
        cost += row["usage"]["cost"]
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    return {
        **{k: v for k, v in fields.items() if k not in ("model_loads", "wall_s", "tokenizer")},
        "n": n,
        "correct": correct,
        "accuracy": _accuracy(correct, n),
        "unparsable": sum(r["prediction"] is None for r in rows),
        "per_category": {
            name: {"n": v[0], "accuracy": _accuracy(v[1], v[0])} for name, v in sorted(per_cat.items())
        },
        "expert_calls": dict(sorted(calls.items())),
        "calls_per_question": round(sum(calls.values()) / n, 4) if n else 0.0,
        "tokens": {"prompt": prompt, "completion": completion},
        "cost": round(cost, 8),
        "roles": {
            role: {**v, "cost": round(v["cost"], 8), "latency_s": round(v["latency_s"], 3)}
            for role, v in sorted(roles.items(), key=lambda kv: ROLE_ORDER.get(kv[0], len(ROLE_ORDER)))
        },
        "tokenizer": fields.get("tokenizer"),
        "model_loads": fields.get("model_loads", {}),
        "wall_s": fields.get("wall_s"),
    }


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
