"""Every instruction coe itself sends to an expert, by name (prompts are data).

A prompt is a ``string.Template``: ``$answers``, ``$question``... are filled in when it is used.
A node or aggregator names the prompt it uses in a parameter that defaults to one of these names;
a graph may name another registered prompt there, or give its own text (using the same fields),
and every call made with a prompt shows its name in the trace (``prompt``; inline text is named
after the node and parameter that hold it).

The wording is coe's own; each prompt says which paper's instruction it restates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template

from coe.types import Message, Messages

__all__ = [
    "PROMPTS",
    "Prompt",
    "inject_references",
    "listing",
    "numbered",
    "prompt_problem",
    "question_text",
    "resolve_prompt",
    "strip_reasoning",
]


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    text: str

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(Template(self.text).get_identifiers())

    def render(self, **values: object) -> str:
        return Template(self.text).substitute({k: str(v) for k, v in values.items()})


_TEXTS: dict[str, str] = {
    # Mixture-of-Agents (Together): the aggregate-and-synthesise instruction. It goes into the
    # system message, followed by the previous layer's answers as a numbered list ("1. ...").
    "moa.references": (
        "Several AI models have answered the latest user message; their answers are listed below. "
        "Combine them into one answer of the highest quality. Weigh them critically: some may be "
        "wrong, incomplete or biased. Do not copy any of them; keep what is right, correct what "
        "is not, and write a complete, accurate and well-organised reply.\n\n"
        "The models' answers:\n$answers"
    ),
    # Symbolic-MoE's aggregator: the responses in draw order, then the question and the request
    # for a chain of thought ending in the answer.
    "synthesize": (
        "Several models answered the question below; their responses follow. Some of them may be "
        "wrong. Evaluate them critically and write one refined, accurate answer of your own "
        "rather than copying any of them.\n\n$answers\n"
        "Question: $question\n"
        "Reason step by step first. When the question has lettered options, finish with "
        '"The answer is (X)", where X is the letter of the correct option.'
    ),
    # A judge that keeps the best k answers (``select``).
    "judge.select": (
        "Question:\n$question\n\n$answers\n\n"
        'Pick the $k best answer(s). Reply with only JSON like {"selected": [0]} '
        "listing the answer numbers (0 to $last)."
    ),
    # SMoA's moderator: one call both selects k responses and decides whether the debate ends.
    "judge.smoa": (
        "You moderate a discussion between language models. Their responses to the question "
        "below are numbered from 0 to $last. Choose the $k best of them for correctness, "
        "relevance, clarity and overall quality, judging critically: some may be wrong. Then "
        "decide whether the discussion can end now, which it can when the responses agree.\n"
        'Reply with JSON only: {"selected": [<$k numbers>], "stop": <true or false>, '
        '"reasoning": "<one sentence>"}.\n\n'
        "Question:\n$question\n\n$answers"
    ),
    # A moderator that only decides whether a loop stops early (``stop``).
    "stop.moderator": (
        "Question:\n$question\n\n"
        "After round $round, the answers are:\n\n$answers\n\n"
        "Is one of these answers good enough to stop the discussion? "
        'Reply with only JSON: {"stop": true} or {"stop": false}.'
    ),
    # SMoA's role generation: one description per proposer, written once per (graph, task).
    "roles.generate": (
        "Write $n different role descriptions for a team of language models that will solve "
        'problems of the task below together. Address each model directly ("You are ...") and '
        "give it an occupation, a personality and the communities it belongs to, chosen so the "
        "team brings different strengths to the task. Reply with JSON only: an object whose "
        '"roles" list holds exactly $n descriptions, such as {"roles": ["You are a patient '
        "secondary-school mathematics teacher who breaks every problem into small steps and "
        'checks each one; you work with pupils, parents and other teachers.", ...]}.\n\n'
        "Task: $task"
    ),
    # Symbolic-MoE's keyword annotator (asked several times per question).
    "annotate.keywords": (
        "Question: $question\n"
        "Which core knowledge, subjects or skills does solving this problem need? List 2 to 5 "
        "keywords separated by commas (for example: virology, contract law, thermodynamics, "
        "probability, macroeconomics). Give only the keywords, with no explanation, in this "
        "form: Keywords: <keyword1>, <keyword2>, ..."
    ),
}

PROMPTS: Mapping[str, Prompt] = {name: Prompt(name, text) for name, text in _TEXTS.items()}


def resolve_prompt(value: str, where: str) -> Prompt:
    """``value`` names a registered prompt, or is the text of one (named ``where`` in traces)."""
    return PROMPTS[value] if value in PROMPTS else Prompt(where, value)


def prompt_problem(value: str, default: str) -> str | None:
    """Why ``value`` cannot stand in for the prompt named ``default``, or None.

    A replacement may use any of the fields the default fills in, and no others."""
    known = PROMPTS[default].fields
    try:
        used = resolve_prompt(value, "inline").fields
        Template(resolve_prompt(value, "inline").text).substitute(dict.fromkeys(used, ""))
    except ValueError as err:
        return f"invalid prompt template: {err}"
    unknown = sorted(used - known)
    if unknown:
        allowed = ", ".join(f"${f}" for f in sorted(known)) or "none"
        return f"unknown prompt field(s) {', '.join('$' + f for f in unknown)} (this prompt fills: {allowed})"
    return None


# --- filling prompts in ---------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_reasoning(text: str) -> str:
    """An answer without its reasoning between ``<think>`` tags (models that print only the
    closing tag keep what follows the last one)."""
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


def question_text(messages: Messages) -> str:
    """The last user message: the question answers are judged or synthesised against."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def numbered(answers: Sequence[str]) -> str:
    """MoA's reference list: ``1. first answer`` and so on, one per line, reasoning stripped."""
    return "\n".join(f"{i + 1}. {strip_reasoning(a)}" for i, a in enumerate(answers))


def listing(answers: Sequence[str], heading: str = "Response {i}:", start: int = 0, limit: int = 1500) -> str:
    """Answers under numbered headings, reasoning stripped, each cut at ``limit`` characters."""
    parts = []
    for i, answer in enumerate(answers):
        text = strip_reasoning(answer)
        text = text if len(text) <= limit else text[:limit] + " [...]"
        parts.append(f"{heading.format(i=i + start)}\n{text}")
    return "\n\n".join(parts)


def inject_references(messages: Messages, answers: Sequence[str], prompt: Prompt) -> list[Message]:
    """MoA's reference injection: the instruction and the numbered answers go into the system
    message (after the conversation's own system message, if it has one)."""
    system = prompt.render(answers=numbered(answers))
    out = list(messages)
    if out and out[0]["role"] == "system":
        return [{"role": "system", "content": f"{out[0]['content']}\n\n{system}"}, *out[1:]]
    return [{"role": "system", "content": system}, *out]
