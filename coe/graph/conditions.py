"""Named conditions for ``conditional_edges`` and ``stop`` nodes: ``(state, threshold) -> bool``."""

from __future__ import annotations

from collections.abc import Callable

from coe.aggregators.vote import answer_key
from coe.graph.state import GraphState

Condition = Callable[[GraphState, float | None], bool]


def agree(state: GraphState, threshold: float | None) -> bool:
    """Every answer of the latest round commits to the same answer key."""
    answers = state.get("latest") or []
    keys = [answer_key(c.content) for c in answers]
    return len(answers) > 0 and keys[0] is not None and all(k == keys[0] for k in keys)


def confident(state: GraphState, threshold: float | None) -> bool:
    """The route decision's confidence is at least ``threshold`` (default 0.5)."""
    route = state.get("route")
    return bool(route and route.confidence is not None and route.confidence >= (threshold or 0.5))


def never(state: GraphState, threshold: float | None) -> bool:
    return False


def judge_stop(state: GraphState, threshold: float | None) -> bool:
    """The loop's judge (a ``select`` node with ``decide_stop``) said the loop may end."""
    return bool(state.get("judged_stop"))


CONDITIONS: dict[str, Condition] = {
    "agree": agree,
    "confident": confident,
    "never": never,
    "judge-stop": judge_stop,
}
