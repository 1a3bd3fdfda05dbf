"""Evaluation prompts: MMLU-Pro's official 5-shot chain of thought, zero-shot, GPQA."""

from __future__ import annotations

from pathlib import Path

import pytest

from coe.errors import UserError
from coe.questions.datasets import Question, load_mmlu_pro, load_validation_shots
from coe.questions.prompts import build_messages, format_question, prompt_prefix, split_prompt

DATA = Path(__file__).parent / "data" / "mmlu_pro"
INSTRUCTION = (
    "The following are multiple choice questions (with answers) about {}. Think step by step and "
    'then finish your answer with "the answer is (X)" where X is the correct letter choice.\n\n\n'
)
TINY = Question(3, "Two plus two?", ("3", "4"), "B", "math", cot_content="A: Let's think step by step. 4.")


@pytest.fixture(scope="module")
def questions() -> list[Question]:
    return load_mmlu_pro(DATA / "test_slice.jsonl")


@pytest.fixture(scope="module")
def shots() -> dict[str, list[Question]]:
    return load_validation_shots(DATA)


def test_five_shot_prompt_shape(questions: list[Question], shots: dict[str, list[Question]]) -> None:
    question = next(q for q in questions if q.category == "law")
    messages = build_messages(question, shots["law"], "cot5")
    assert len(messages) == 1 and messages[0]["role"] == "user"
    prompt = messages[0]["content"]
    assert prompt.startswith(INSTRUCTION.format("law") + "Question:\n")
    assert prompt.count("Question:\n") == 6
    assert prompt.endswith(
        question.question
        + "\nOptions:\n"
        + "".join(
            f"{letter}. {option}\n" for letter, option in zip("ABCDEFGHIJ", question.options, strict=False)
        )
        + "Answer: Let's think step by step."
    )
    assert "A: Let's think step by step." not in prompt
    assert prompt.count("Answer: Let's think step by step.") == 6
    for shot in shots["law"]:
        worked = shot.cot_content.replace("A: Let's think step by step.", "Answer: Let's think step by step.")
        assert f"Question:\n{shot.question}\nOptions:\nA. {shot.options[0]}\n" in prompt
        assert worked + "\n\n" in prompt


def test_shots_with_na_padding_show_only_real_options(shots: dict[str, list[Question]]) -> None:
    biology = shots["biology"]
    assert any(len(s.options) == 4 for s in biology)  # two of them had six "N/A" entries
    prefix = prompt_prefix("cot5", "biology", tuple(biology))
    assert "N/A" not in prefix and "\nE. " in prefix


def test_exact_text_of_small_prompts() -> None:
    question = Question(9, "Which?", ("x", "y"), "A", "math")
    (five,) = build_messages(question, [TINY])
    assert five["content"] == (
        INSTRUCTION.format("math")
        + "Question:\nTwo plus two?\nOptions:\nA. 3\nB. 4\nAnswer: Let's think step by step. 4.\n\n"
        + "Question:\nWhich?\nOptions:\nA. x\nB. y\nAnswer: Let's think step by step."
    )
    (zero,) = build_messages(question, style="cot0")
    assert zero["content"] == INSTRUCTION.format("math") + format_question(question)
    (gpqa,) = build_messages(question, style="gpqa")
    assert gpqa["content"] == (
        "The following is a multiple choice question. Think step by step and then finish your answer "
        'with "the answer is (X)" where X is the correct letter choice.\n\n\n'
        "Question:\nWhich?\nOptions:\nA. x\nB. y\nAnswer: Let's think step by step."
    )


def test_shot_without_reasoning_states_its_answer() -> None:
    bare = Question(4, "One?", ("1", "2"), "A", "math")
    assert format_question(bare, with_answer=True).endswith("Answer: The answer is (A).\n\n")


def test_shots_need_the_few_shot_style() -> None:
    with pytest.raises(UserError, match="takes no shots"):
        build_messages(TINY, [TINY], style="cot0")
    with pytest.raises(UserError, match="unknown prompt style"):
        build_messages(TINY, style="cot9")  # type: ignore[arg-type]


def test_prefix_is_built_once_per_category(
    questions: list[Question], shots: dict[str, list[Question]]
) -> None:
    prompt_prefix.cache_clear()
    law = [q for q in questions if q.category == "law"]
    for question in law:
        build_messages(question, shots["law"])
    info = prompt_prefix.cache_info()
    assert (info.misses, info.hits) == (1, len(law) - 1)
    first = prompt_prefix("cot5", "law", tuple(shots["law"]))
    assert first is prompt_prefix("cot5", "law", tuple(shots["law"]))


def test_split_prompt(questions: list[Question], shots: dict[str, list[Question]]) -> None:
    for question in questions:
        (message,) = build_messages(question, shots[question.category])
        prefix, rest = split_prompt(message["content"])
        assert prefix == prompt_prefix("cot5", question.category, tuple(shots[question.category]))
        assert rest == format_question(question)
    assert split_prompt("just text") == ("", "just text")
    assert split_prompt("Question:\nq\nOptions:\n") == ("", "Question:\nq\nOptions:\n")
