"""Routing methods, one module each, behind ``routers.base.Router``; looked up by name in ``ROUTERS``."""

from coe.registry import Registry
from routers.base import Router, RouterContext, RouterParams, build_router

ROUTERS: Registry[Router] = Registry(
    "router",
    Router,
    {
        "fixed": "routers.fixed:FixedRouter",
        "random": "routers.random:RandomRouter",
        "cost-threshold": "routers.cost_threshold:CostThresholdRouter",
        "coe": "routers.coe:CoERouter",
        "bench-coe-subject": "routers.bench_coe_subject:BenchCoESubjectRouter",
        "bench-coe-query": "routers.bench_coe_query:BenchCoEQueryRouter",
        "symbolic-moe": "routers.symbolic_moe:SymbolicMoERouter",
        "ranked": "routers.ranked:RankedRouter",
    },
)

__all__ = ["ROUTERS", "Router", "RouterContext", "RouterParams", "build_router"]
