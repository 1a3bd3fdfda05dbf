"""The JSON Schema of graph files, for editors (``coe graph schema``)."""

from __future__ import annotations

import copy
from typing import Any

from coe.graph.nodes import NODE_KINDS
from coe.graph.spec import GraphSpec


def _node_schema(kind: str) -> dict[str, Any]:
    schema = copy.deepcopy(NODE_KINDS.get(kind).Params.model_json_schema())
    defs = schema.pop("$defs", {})
    schema["properties"] = {"kind": {"const": kind}, **schema.get("properties", {})}
    schema["required"] = ["kind", *schema.get("required", [])]
    schema["additionalProperties"] = False
    schema["title"] = f"{kind} node"
    return {"schema": schema, "defs": defs}


def graph_schema() -> dict[str, Any]:
    schema = GraphSpec.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    variants = []
    for kind in NODE_KINDS.names:
        part = _node_schema(kind)
        defs.update(part["defs"])
        defs[f"{kind}_node"] = part["schema"]
        variants.append({"$ref": f"#/$defs/{kind}_node"})
    defs["NodeSpec"] = {"oneOf": variants, "title": "node"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "coe graph"
    return schema
