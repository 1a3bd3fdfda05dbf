"""The state a graph run carries between nodes (a LangGraph ``StateGraph`` schema).

Keys annotated with a reducer combine updates (both executors apply the same reducers): trace
events append; ``rounds`` and ``carry`` merge per loop; ``branches`` collects the results of one
fan-out's parallel branches until its join clears them.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from coe.aggregators.base import Aggregate
from coe.pipeline import RunParams
from coe.types import Candidate, Message, RouteDecision


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Per-key update: a loop's or node's entry replaces its previous one."""
    return {**left, **right}


def collect(left: dict[str, dict[int, Any]], right: dict[str, dict[int, Any] | None]) -> dict[str, Any]:
    """Branch results by node and branch index; ``{node: None}`` clears a node's (its join ran)."""
    out = dict(left)
    for node, results in right.items():
        if results is None:
            out.pop(node, None)
        else:
            out[node] = {**out.get(node, {}), **results}
    return out


Events = Annotated[list[dict[str, Any]], operator.add]


class GraphState(TypedDict, total=False):
    messages: list[Message]
    params: RunParams
    route: RouteDecision | None
    latest: list[Candidate]  # the last experts or propose node's answers
    history: Annotated[list[Candidate], operator.add]  # every answer of every round
    selected: list[Candidate]  # what the last select node kept
    aggregate: Aggregate | None
    rounds: Annotated[dict[str, int], merge]  # completed rounds per loop (named by its stop node)
    carry: Annotated[dict[str, list[Candidate]], merge]  # the answers a loop takes into its next round
    stopped: bool
    judged_stop: bool  # the last judge's verdict on ending its loop (select with decide_stop)
    plans: Annotated[dict[str, list[Any]], merge]  # a fan-out's jobs, one per branch
    branches: Annotated[dict[str, dict[int, Any]], collect]  # a fan-out's branch results
    answer: str
    finish_reason: str  # the expert's, for the generation that became the answer
    # trace events, appended by nodes
    route_log: Events
    calls: Events
    selections: Events
    stops: Events
    aggregates: Events
