"""The aggregator interface: one required method, ``aggregate``."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coe.types import Candidate, Messages


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The combined answer, which candidates it came from, and how it was decided."""

    content: str
    chosen: tuple[str, ...]
    detail: dict[str, Any] = field(default_factory=dict)


class Aggregator(abc.ABC):
    """Combines candidate answers into one. Configured by keyword parameters from the graph.

    An aggregator that asks an expert sets ``uses_experts``; it then also receives ``lookup``
    (the graph's way to reach experts) and ``base_dir`` (the graph file's folder), and may put
    its own expert calls under ``detail["calls"]`` for the trace.
    """

    uses_experts: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abc.abstractmethod
    async def aggregate(self, messages: Messages, candidates: Sequence[Candidate]) -> Aggregate:
        """Return the final answer; raise ``UserError`` if ``candidates`` is empty."""
