"""The router interface: one required method, ``route``. Routers read only the request's messages."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from coe.types import Messages, RouteDecision

if TYPE_CHECKING:
    from coe.experts.base import ExpertClient
    from coe.pipeline import Trace


class RouterParams(BaseModel):
    """Parameters a graph gives a router; subclasses add fields. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class ExpertLookup(Protocol):
    def client(self, name: str) -> ExpertClient: ...


@dataclass(frozen=True, slots=True)
class RouterContext:
    """What a router may know when built: the graph's expert pool, where artifacts live, and (for
    routers that ask an LLM, such as Symbolic-MoE's skill annotator) a way to reach experts."""

    experts: Sequence[str]
    base_dir: Path
    lookup: ExpertLookup | None = None


class Router(abc.ABC):
    """Chooses experts for one request."""

    Params: ClassVar[type[RouterParams]] = RouterParams
    name: ClassVar[str] = ""

    def __init__(self, params: RouterParams, context: RouterContext) -> None:
        self.params = params
        self.context = context

    @classmethod
    def expert_refs(cls, params: RouterParams) -> list[tuple[tuple[str | int, ...], str]]:
        """Expert names the params mention, with their location inside params (for validation)."""
        return []

    @classmethod
    def check(cls, params: RouterParams, context: RouterContext) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems with these params that only show with context (missing artifacts, say)."""
        return []

    @abc.abstractmethod
    async def route(self, messages: Messages) -> RouteDecision:
        """Pick experts for ``messages``."""

    async def route_recorded(self, messages: Messages, trace: Trace, node: str) -> RouteDecision:
        """Route, recording in ``trace`` (as calls of ``node``) every expert call made to decide:
        an LLM annotator's, with role ``annotate``. Routers that call experts override this and
        build ``route`` on it; the others need not."""
        return await self.route(messages)


def build_router(cls: type[Router], params: dict[str, Any], context: RouterContext) -> Router:
    return cls(cls.Params.model_validate(params), context)
