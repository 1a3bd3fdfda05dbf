"""coe: compose heterogeneous expert LLMs behind one OpenAI-compatible API.

The public API is re-exported here; heavier parts (the FastAPI app, the service, graphs) are
imported on first attribute access, so ``import coe`` stays cheap and does nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

from coe.errors import (
    CoeError,
    ConfigError,
    ExpertError,
    ExpertTimeout,
    GraphNotFound,
    InvalidRequest,
    LaunchError,
    UnknownQuestion,
    UpstreamError,
    UserError,
)
from coe.types import Candidate, Completion, ExpertRequest, Message, RouteDecision, Usage

_LAZY = {
    "Settings": "coe.config",
    "ExpertConfig": "coe.config",
    "ExpertClient": "coe.experts.base",
    "ExpertPool": "coe.experts.pool",
    "Pipeline": "coe.pipeline",
    "RunParams": "coe.pipeline",
    "RunResult": "coe.pipeline",
    "Service": "coe.service",
    "create_app": "coe.api.app",
    "load_graph": "coe.graph.loader",
    "GraphPipeline": "coe.graph.compile",
}

__all__ = [
    "Candidate",
    "CoeError",
    "Completion",
    "ConfigError",
    "ExpertError",
    "ExpertRequest",
    "ExpertTimeout",
    "GraphNotFound",
    "InvalidRequest",
    "LaunchError",
    "Message",
    "RouteDecision",
    "UnknownQuestion",
    "UpstreamError",
    "Usage",
    "UserError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coe' has no attribute {name!r}")
