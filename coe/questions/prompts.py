"""Evaluation prompts: MMLU-Pro's official chain-of-thought prompt, zero- and few-shot, and GPQA.

The MMLU-Pro text follows TIGER-Lab's ``evaluate_from_local.py`` (the script that produced the
recorded outputs replayed by coe) with its current ``cot_prompt_lib/initial_prompt.txt``::

    The following are multiple choice questions (with answers) about {subject}. Think step by
    step and then finish your answer with "the answer is (X)" where X is the correct letter
    choice.\\n\\n\\n
    Question:\\n{question}\\nOptions:\\nA. {option}\\n...{cot_content}\\n\\n     (each shot)
    Question:\\n{question}\\nOptions:\\nA. {option}\\n...Answer: Let's think step by step.

A shot's ``cot_content`` starts "A: Let's think step by step."; its "A:" becomes "Answer:".
The instruction and shots of a category are built once and reused (:func:`prompt_prefix`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

from coe.errors import UserError
from coe.questions.datasets import Question
from coe.questions.extract import LETTERS
from coe.types import Message

__all__ = [
    "QUESTION_HEADING",
    "PromptStyle",
    "build_messages",
    "format_question",
    "prompt_prefix",
    "split_prompt",
]

PromptStyle = Literal["cot5", "cot0", "gpqa"]

QUESTION_HEADING = "Question:\n"
_ANSWER_CUE = "Answer: Let's think step by step."
_FINISH = (
    'Think step by step and then finish your answer with "the answer is (X)" '
    "where X is the correct letter choice."
)
_MMLU_INSTRUCTION = "The following are multiple choice questions (with answers) about {subject}. " + _FINISH
_GPQA_INSTRUCTION = "The following is a multiple choice question. " + _FINISH


def build_messages(
    question: Question,
    shots: Sequence[Question] = (),
    style: PromptStyle = "cot5",
) -> list[Message]:
    """One user message holding the whole prompt for ``question``.

    ``cot5`` is MMLU-Pro's few-shot chain of thought over ``shots`` (normally the 5 validation
    questions of the category), ``cot0`` the same instruction with no examples, and ``gpqa`` a
    zero-shot chain of thought with no subject. Only ``cot5`` takes shots.
    """
    if shots and style != "cot5":
        raise UserError(f"prompt style {style!r} takes no shots; use 'cot5'")
    prefix = prompt_prefix(style, question.category, tuple(shots))
    return [{"role": "user", "content": prefix + format_question(question)}]


@functools.lru_cache(maxsize=128)
def prompt_prefix(style: PromptStyle, category: str, shots: tuple[Question, ...] = ()) -> str:
    """The part of a prompt shared by every question of ``category``: instruction and shots."""
    if style == "gpqa":
        instruction = _GPQA_INSTRUCTION
    elif style in ("cot5", "cot0"):
        instruction = _MMLU_INSTRUCTION.format(subject=category)
    else:
        raise UserError(f"unknown prompt style {style!r}; expected cot5, cot0 or gpqa")
    examples = "".join(format_question(shot, with_answer=True) for shot in shots)
    return instruction + "\n\n\n" + examples


def format_question(question: Question, *, with_answer: bool = False) -> str:
    """One ``Question:``/``Options:`` block, ending with the shot's reasoning or the answer cue."""
    options = "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(question.options))
    block = f"{QUESTION_HEADING}{question.question}\nOptions:\n{options}"
    if not with_answer:
        return block + _ANSWER_CUE
    return block + _worked_answer(question) + "\n\n"


def _worked_answer(shot: Question) -> str:
    if not shot.cot_content:
        return f"Answer: The answer is ({shot.answer})."
    return shot.cot_content.replace("A: Let's think step by step.", _ANSWER_CUE)


def split_prompt(text: str) -> tuple[str, str]:
    """Split a prompt before its last ``Question:`` heading: ``(shared prefix, question part)``.

    With cl100k-style tokenizers the prefix ends in newlines and the rest starts a word, so
    ``count(prefix) + count(rest) == count(text)``. Text with no heading is all question part.
    """
    cut = text.rfind("\n" + QUESTION_HEADING)
    if cut < 0:
        return "", text
    return text[: cut + 1], text[cut + 1 :]
