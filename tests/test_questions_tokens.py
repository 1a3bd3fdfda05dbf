"""The offline token counter: litellm's bundled cl100k_base, no network, shared-prefix reuse."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from coe.questions import tokens
from coe.questions.datasets import load_mmlu_pro, load_validation_shots
from coe.questions.prompts import build_messages, split_prompt
from coe.questions.tokens import TokenCounter

DATA = Path(__file__).parent / "data" / "mmlu_pro"


def test_counts_with_cl100k() -> None:
    counter = TokenCounter()
    assert counter.name == "tiktoken/cl100k_base"
    assert counter.count("") == 0
    assert counter.count("hello world") == 2
    assert counter.count("<|endoftext|>") > 1  # special tokens are plain text here


def test_loads_offline_without_touching_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tried to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    tokens._encoding.cache_clear()
    try:
        assert TokenCounter().count("offline") > 0
    finally:
        tokens._encoding.cache_clear()
    assert "TIKTOKEN_CACHE_DIR" not in os.environ


def test_prefix_plus_rest_equals_whole_prompt() -> None:
    counter = TokenCounter()
    shots = load_validation_shots(DATA)
    for question in load_mmlu_pro(DATA / "test_slice.jsonl"):
        (message,) = build_messages(question, shots[question.category])
        prefix, rest = split_prompt(message["content"])
        assert counter.count_prompt(prefix, rest) == counter.count(message["content"])


def test_counting_a_slice_is_fast() -> None:
    counter = TokenCounter()
    counter.count("warm up")
    shots = load_validation_shots(DATA)
    prompts = [
        build_messages(q, shots[q.category])[0]["content"] for q in load_mmlu_pro(DATA / "test_slice.jsonl")
    ]
    with gzip.open(DATA / "outputs" / "gemma-7b.jsonl.gz", "rt", encoding="utf-8") as lines:
        responses = [json.loads(line)["response"] for line in lines]
    started = time.perf_counter()
    total = sum(counter.count_prompt(*split_prompt(p)) for p in prompts)
    total += sum(counter.count(r) for r in responses)
    assert total > 200 * 1000
    assert time.perf_counter() - started < 2.0  # ~40x this is well under 10 s for 8,446 questions
