"""Routing methods, one module each, behind ``routers.base.Router``; looked up by name in ``ROUTERS``."""

from coe.registry import Registry
from routers.base import Router, RouterContext, RouterParams, build_router

ROUTERS: Registry[Router] = Registry(
    "router",
    Router,
    {
        "fixed": "routers.fixed:FixedRouter",
    },
)

__all__ = ["ROUTERS", "Router", "RouterContext", "RouterParams", "build_router"]
