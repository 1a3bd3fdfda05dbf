"""Helpers for nodes that ask an LLM for a JSON verdict (judges, moderators)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from coe.prompts import Prompt, listing, question_text
from coe.types import Candidate, Message, Messages

_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first flat JSON object in ``text`` that parses, or ``None``."""
    for match in _OBJECT.finditer(text):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def judge_messages(
    prompt: Prompt, messages: Messages, candidates: Sequence[Candidate], k: int
) -> list[Message]:
    """A judge's request: the question and the answers numbered from 0 (``$k``, ``$last``)."""
    text = prompt.render(
        question=question_text(messages),
        answers=listing([c.content for c in candidates]),
        k=k,
        last=len(candidates) - 1,
    )
    return [{"role": "user", "content": text}]


def moderator_messages(
    prompt: Prompt, messages: Messages, candidates: Sequence[Candidate], round_: int
) -> list[Message]:
    text = prompt.render(
        question=question_text(messages), answers=listing([c.content for c in candidates]), round=round_
    )
    return [{"role": "user", "content": text}]
