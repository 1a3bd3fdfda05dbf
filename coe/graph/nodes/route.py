"""``route``: a router from ``routers/`` picks the experts for this request."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from coe.errors import UserError
from coe.experts.base import Emit
from coe.graph.nodes.base import BuildContext, Loc, NodeKind, NodeParams, Problem
from coe.graph.state import GraphState
from coe.pipeline import Trace
from routers import ROUTERS, RouterContext, build_router


class RouteParams(NodeParams):
    router: str = Field(description="a router name from routers/ (e.g. fixed)")
    params: dict[str, Any] = Field(default_factory=dict, description="the router's own parameters")


class RouteNode(NodeKind):
    Params = RouteParams

    def __init__(self, name: str, params: NodeParams, context: BuildContext) -> None:
        super().__init__(name, params, context)
        assert isinstance(params, RouteParams)
        self.router = build_router(
            ROUTERS.get(params.router),
            params.params,
            RouterContext(context.experts, context.base_dir, context.lookup),
        )

    @classmethod
    def expert_refs(cls, params: NodeParams) -> list[tuple[Loc, str]]:
        assert isinstance(params, RouteParams)
        if params.router not in ROUTERS:
            return []
        router_cls = ROUTERS.get(params.router)
        try:
            router_params = router_cls.Params.model_validate(params.params)
        except ValueError:
            return []
        return [(("params", *loc), name) for loc, name in router_cls.expert_refs(router_params)]

    @classmethod
    def check(cls, params: NodeParams, experts: Sequence[str], base_dir: Path) -> list[Problem]:
        import pydantic

        assert isinstance(params, RouteParams)
        if params.router not in ROUTERS:
            return [(("router",), f"unknown router {params.router!r} (known: {', '.join(ROUTERS.names)})")]
        router_cls = ROUTERS.get(params.router)
        try:
            router_params = router_cls.Params.model_validate(params.params)
        except pydantic.ValidationError as err:
            return [
                (("params", *e["loc"]), "unknown field" if e["type"] == "extra_forbidden" else e["msg"])
                for e in err.errors(include_url=False)
            ]
        return [
            (("params", *loc), msg)
            for loc, msg in router_cls.check(router_params, RouterContext(experts, base_dir))
        ]

    async def __call__(self, state: GraphState, emit: Emit | None = None) -> dict[str, Any]:
        trace = Trace(self.context.graph)
        decision = await self.router.route_recorded(state["messages"], trace, self.name)
        if not decision.experts:
            raise UserError(f"router {self.router.name!r} chose no expert")
        log = {"node": self.name, **decision.as_dict()}
        return {"route": decision, "route_log": [log], "calls": trace.calls}
