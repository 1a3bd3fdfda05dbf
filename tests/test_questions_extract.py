"""MMLU-Pro's answer extraction chain: each step, edge cases, equality with the original
(quadratic) regexes, and linear time on degenerate responses."""

from __future__ import annotations

import gzip
import json
import random
import re
import time
from pathlib import Path

import pytest

from coe.questions.extract import LETTERS, extract_choice

OUTPUTS = Path(__file__).parent / "data" / "mmlu_pro" / "outputs"


def original_chain(text: str) -> str | None:
    """MMLU-Pro's evaluate_from_local.py chain, verbatim regexes (quadratic on some inputs)."""
    found = re.search(r"answer is \(?([A-J])\)?", text)
    if found:
        return found.group(1)
    found = re.search(r".*[aA]nswer:\s*([A-J])", text)
    if found:
        return found.group(1)
    found = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return found.group(0) if found else None


def test_letters() -> None:
    assert LETTERS == "ABCDEFGHIJ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is (C).", "C"),
        ("The answer is D", "D"),
        ("the answer is (A) ... no wait, the answer is (B)", "A"),  # the first one wins
        ("answer is (J)", "J"),
        ("Answer: B. Later, the answer is (E).", "E"),  # step 1 before step 2
    ],
)
def test_step1_answer_is(text: str, expected: str) -> None:
    assert extract_choice(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: C", "C"),
        ("answer:\n\n   E because", "E"),  # the whitespace may cross lines
        ("Answer: A then Answer: B\nAnswer: C", "B"),  # the last one on the first line that has one
        ("Answer: x and Answer: D", "D"),
        ("Answer: none here\nsecond line Answer: F", "F"),
        ("answer: Answer: B", "B"),  # the letter of one "answer:" starts the next "Answer:"
        ("ANSWER: B", "B"),  # not step 2 (case), but B is the last standalone letter
    ],
)
def test_step2_answer_colon(text: str, expected: str) -> None:
    assert extract_choice(text) == expected == original_chain(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I think B or maybe C.", "C"),
        ("The Answer is (B)", "B"),  # capital A: neither step 1 nor step 2
        ("E=mc^2", "E"),
        ("ABC and DEF", None),  # no standalone letter
        ("answer is (K)", None),
        ("", None),
        ("(A)\n\n(B)\n", "B"),
    ],
)
def test_step3_last_standalone_letter(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected == original_chain(text)


def test_same_as_original_chain_on_recorded_responses() -> None:
    responses = []
    for path in sorted(OUTPUTS.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            responses += [json.loads(line)["response"] for line in lines]
    assert len(responses) == 630
    # The original regexes take seconds on a response holding one very long line: skip those few.
    checked = [text for text in responses if max(map(len, text.split("\n"))) <= 2_000]
    assert len(checked) > 600
    differing = [i for i, text in enumerate(checked) if extract_choice(text) != original_chain(text)]
    assert differing == []
    steps = {"none": 0, "answer is": 0}
    for text in responses:
        if extract_choice(text) is None:
            steps["none"] += 1
        elif re.search(r"answer is \(?([A-J])\)?", text):
            steps["answer is"] += 1
    assert steps["none"] > 0 and steps["answer is"] > 300  # the slice exercises several steps


def test_same_as_original_chain_on_random_texts() -> None:
    pieces = ["answer:", "Answer:", "answer is (", "answer is ", ")", " ", "  ", "\n", "\t", "x", "K", "."]
    pieces += list("ABCJ")
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        assert extract_choice(text) == original_chain(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "Answer: x " * 20_000,  # one 200k-character line of "answer:" with no letter
        "answer:" + " " * 200_000 + "x",  # a huge whitespace run after "answer:"
        "A " * 100_000,  # 100k standalone letters (step 3's lookahead is quadratic)
        ("answer:\n" * 25_000) + "z",  # many lines, none qualifying
        "x" * 200_000,  # nothing at all
    ],
    ids=["answer-colon-line", "long-space", "many-letters", "many-lines", "no-match"],
)
def test_degenerate_responses_are_fast(text: str) -> None:
    started = time.perf_counter()
    extract_choice(text)
    assert time.perf_counter() - started < 2.0
