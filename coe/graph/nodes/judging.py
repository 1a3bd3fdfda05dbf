"""Helpers for nodes that ask an LLM for a JSON verdict (judges, moderators)."""

from __future__ import annotations

import json
import re
from typing import Any

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


def question_text(messages: Messages) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def listing(candidates: list[Candidate], limit: int = 1500) -> str:
    parts = []
    for i, cand in enumerate(candidates):
        text = cand.content if len(cand.content) <= limit else cand.content[:limit] + " [...]"
        parts.append(f"Answer {i}:\n{text}")
    return "\n\n".join(parts)


def judge_messages(messages: Messages, candidates: list[Candidate], k: int) -> list[Message]:
    prompt = (
        f"Question:\n{question_text(messages)}\n\n{listing(candidates)}\n\n"
        f'Pick the {k} best answer(s). Reply with only JSON like {{"selected": [0]}} '
        f"listing the answer numbers (0 to {len(candidates) - 1})."
    )
    return [{"role": "user", "content": prompt}]


def moderator_messages(messages: Messages, candidates: list[Candidate], round_: int) -> list[Message]:
    prompt = (
        f"Question:\n{question_text(messages)}\n\n"
        f"After round {round_}, the answers are:\n\n{listing(candidates)}\n\n"
        "Is one of these answers good enough to stop the discussion? "
        'Reply with only JSON: {"stop": true} or {"stop": false}.'
    )
    return [{"role": "user", "content": prompt}]
