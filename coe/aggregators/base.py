"""The aggregator interface: one required method, ``aggregate``, with the routers' contract.

An aggregator has typed parameters (``Params``, unknown keys rejected), a ``check`` for problems
only visible with context (a missing artifact, say) and declares the experts it calls
(``expert_refs``), so ``coe graph validate`` reports a misspelt parameter or an unknown expert
with its file, line and column.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from coe.experts.base import Emit
from coe.pipeline import RunParams
from coe.types import Candidate, Messages

if TYPE_CHECKING:
    from coe.experts.base import ExpertClient

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The combined answer, which candidates it came from, and how it was decided."""

    content: str
    chosen: tuple[str, ...]
    detail: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"


class AggregatorParams(BaseModel):
    """Parameters a graph gives an aggregator; subclasses add fields. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class ExpertLookup(Protocol):
    def client(self, name: str) -> ExpertClient: ...


@dataclass(frozen=True, slots=True)
class AggregatorContext:
    """What an aggregator may use: a way to reach experts (for those that call one), the graph
    file's folder (artifacts), and the name of its node (for the trace)."""

    lookup: ExpertLookup | None = None
    base_dir: Path = Path(".")
    node: str = "aggregate"
    experts: Sequence[str] = ()


class Aggregator(abc.ABC):
    """Combines candidate answers into one. An aggregator that asks an expert records its calls
    under ``detail["calls"]`` (the node moves them into the trace)."""

    Params: ClassVar[type[AggregatorParams]] = AggregatorParams

    def __init__(
        self, params: AggregatorParams | None = None, context: AggregatorContext | None = None
    ) -> None:
        self.params = params if params is not None else self.Params()
        self.context = context if context is not None else AggregatorContext()

    @classmethod
    def expert_refs(cls, params: AggregatorParams) -> list[tuple[Loc, str]]:
        """Expert names the params mention, with their location inside params."""
        return []

    @classmethod
    def check(cls, params: AggregatorParams, context: AggregatorContext) -> list[tuple[Loc, str]]:
        """Problems with these params that only show with context."""
        return []

    @abc.abstractmethod
    async def aggregate(
        self,
        messages: Messages,
        candidates: Sequence[Candidate],
        params: RunParams | None = None,
        emit: Emit | None = None,
    ) -> Aggregate:
        """Return the final answer; raise ``UserError`` if ``candidates`` is empty.

        ``params`` are the request's (its metadata goes with every call made for it). ``emit`` is
        set when the aggregate is the run's answer: an aggregator that writes a new
        answer with one generation streams its text through it; one that decides between finished
        answers ignores it (the answer is sent once decided)."""
