"""Node kinds, registered by name and imported on first use."""

from coe.graph.nodes.base import BuildContext, NodeKind, NodeParams
from coe.registry import Registry

NODE_KINDS: Registry[NodeKind] = Registry(
    "node kind",
    NodeKind,
    {
        "route": "coe.graph.nodes.route:RouteNode",
        "experts": "coe.graph.nodes.experts:ExpertsNode",
        "propose": "coe.graph.nodes.propose:ProposeNode",
        "select": "coe.graph.nodes.select:SelectNode",
        "stop": "coe.graph.nodes.stop:StopNode",
        "aggregate": "coe.graph.nodes.aggregate:AggregateNode",
        "answer": "coe.graph.nodes.answer:AnswerNode",
        "cascade": "coe.graph.nodes.cascade:CascadeNode",
        "mot": "coe.mot.node:MotNode",
    },
)

__all__ = ["NODE_KINDS", "BuildContext", "NodeKind", "NodeParams"]
