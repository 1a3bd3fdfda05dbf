"""The router interface: one required method, ``route``. Routers read only the request's messages."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from coe.types import Messages, RouteDecision


class RouterParams(BaseModel):
    """Parameters a graph gives a router; subclasses add fields. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class RouterContext:
    """What a router may know when built: the graph's expert pool and where artifacts live."""

    experts: Sequence[str]
    base_dir: Path


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


def build_router(cls: type[Router], params: dict[str, Any], context: RouterContext) -> Router:
    return cls(cls.Params.model_validate(params), context)
