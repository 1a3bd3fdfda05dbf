"""``coe batch submit | status | results`` as users run them, with no REDIS_URL: submit starts its
own Redis and an in-process worker; status and results start that Redis again on the same data."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import coe, write_settings

QUESTIONS = [
    {
        "id": "add",
        "messages": [{"role": "user", "content": "2+2=? A. 3 B. 4. Reply with a letter."}],
        "answer": "B",
    },
    {"id": "open", "messages": [{"role": "user", "content": "Name a colour."}]},
]


def test_submit_status_results(tmp_path: Path) -> None:
    config = str(write_settings(tmp_path, batch_memory_budget_bytes=1))
    items = tmp_path / "in.jsonl"
    items.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    submit = coe("batch", "submit", str(items), "--graph", "single", "--max-tokens", "4", "--config", config)
    assert submit.returncode == 0, submit.stderr
    batch_id = submit.stdout.strip()
    assert len(batch_id) == 16, submit.stdout
    assert f"batch {batch_id}: done, 2/2 items done" in submit.stderr

    status = coe("batch", "status", batch_id, "--config", config)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["status"] == "done" and report["items"] == {"total": 2, "done": 2, "failed": 0}
    assert report["calls"] == {"enqueued": 2, "done": 2, "dead": 0}
    smollm2 = report["experts"]["smollm2"]
    assert smollm2["model_loads"] == 1 and smollm2["calls_done"] == 2 and smollm2["queue_depth"] == 0
    assert smollm2["load_s"] > 0 and smollm2["resident_s"] > 0 and smollm2["resident"] is False

    results = coe("batch", "results", batch_id, "--config", config)
    assert results.returncode == 0, results.stderr
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["add", "open"]
    assert all(line["content"] and line["trace"]["calls"][0]["expert"] == "smollm2" for line in lines)
    assert "prediction" in lines[0] and "prediction" not in lines[1]


def test_bad_input(tmp_path: Path) -> None:
    config = str(write_settings(tmp_path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": "hi"}\n')
    result = coe("batch", "submit", str(bad), "--graph", "single", "--config", config)
    assert result.returncode == 2
    assert result.stderr.strip() == f'coe batch: {bad}:1: "messages" must be a non-empty list'
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(QUESTIONS[1]) + "\n")
    result = coe("batch", "submit", str(good), "--graph", "nope", "--config", config)
    assert result.returncode == 2 and "no graph 'nope'" in result.stderr
    result = coe("batch", "submit", str(good), "--graph", "single", "--detach", "--config", config)
    assert result.returncode == 2 and "--detach needs REDIS_URL" in result.stderr
    result = coe("batch", "status", "0123456789abcdef", "--config", config)
    assert result.returncode == 2 and "no batch '0123456789abcdef'" in result.stderr
