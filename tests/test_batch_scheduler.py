"""The scheduler end to end with real llama.cpp experts: ``coe eval --batch`` over the three
default experts with a memory budget of one model loads each model exactly once and never runs
two model servers at once (checked from /proc, not only from coe's own bookkeeping)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from conftest import REPO, cmdline, write_settings

from coe.config import Settings
from coe.eval.runner import EvalOptions, run_eval

pytestmark = pytest.mark.asyncio
EXPERTS = ["smollm2", "smollm2-warm", "gemma3-270m"]


def model_servers() -> list[int]:
    """llama.cpp servers that are children of this process."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[1] == me and stat[0] != "Z" and "coe.experts._llama_server" in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


async def test_batch_eval_loads_each_model_once(tmp_path: Path, timings: dict[str, float]) -> None:
    settings = Settings.load(write_settings(tmp_path, batch_memory_budget_bytes=1))  # one model at a time
    options = EvalOptions(
        graph="vote",
        dataset="mmlu-pro",
        out=tmp_path / "out",
        data_path=str(REPO / "tests" / "data" / "mmlu_pro" / "test_slice.jsonl"),
        limit=3,
        prompt="cot0",
        max_tokens=4,
        progress=False,
        batch=True,
    )
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(model_servers()))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        summary = await run_eval(options, settings)
    finally:
        watcher.cancel()
    timings["batch eval: vote, 3 questions, 3 experts, one model at a time"] = summary["wall_s"]
    assert summary["model_loads"] == dict.fromkeys(EXPERTS, 1)
    assert summary["batch"]["max_resident"] == 1
    assert most == 1, f"{most} model servers ran at once"
    assert summary["n"] == 3 and summary["expert_calls"] == dict.fromkeys(EXPERTS, 3)
    assert summary["batch"]["calls"] == {"enqueued": 9, "done": 9, "dead": 0}
    assert all(e["queue_depth"] == 0 for e in summary["batch"]["experts"].values())
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert sorted(row["experts"]) == sorted(EXPERTS)
        assert row["usage"]["completion_tokens"] > 0 and "error" not in row
    assert (tmp_path / "out" / "report.md").exists()
    assert not model_servers(), "the in-process worker unloaded every model"
