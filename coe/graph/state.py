"""The state a graph run carries between nodes (a LangGraph ``StateGraph`` schema)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from coe.aggregators.base import Aggregate
from coe.pipeline import RunParams
from coe.types import Candidate, Message, RouteDecision

Events = Annotated[list[dict[str, Any]], operator.add]


class GraphState(TypedDict, total=False):
    messages: list[Message]
    params: RunParams
    route: RouteDecision | None
    latest: list[Candidate]  # the last experts node's answers
    history: Annotated[list[Candidate], operator.add]  # every answer of every round
    selected: list[Candidate]  # what the last select node kept
    aggregate: Aggregate | None
    round: int  # completed loop rounds (incremented by stop nodes)
    stopped: bool
    answer: str
    # trace events, appended by nodes
    route_log: Events
    calls: Events
    selections: Events
    stops: Events
    aggregates: Events
