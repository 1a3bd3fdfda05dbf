"""GraphSpec: the YAML schema of a graph under ``graphs/``.

::

    description: every expert answers; the majority wins
    experts: pool                 # or a list of expert names
    entry: experts
    exit: answer
    nodes:
      experts: {kind: experts}
      vote:    {kind: aggregate, aggregator: vote}
      answer:  {kind: answer}
    edges:
      - [experts, vote]
      - [vote, answer]

A node is ``kind`` plus that kind's parameters (checked against the kind's own schema).
``conditional_edges`` branch on a named condition; a ``stop`` node ends a loop after
``max_rounds`` (every cycle must pass through one).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"


class NodeSpec(BaseModel):
    """``kind`` names a node kind; every other key is a parameter of that kind."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(description="route | experts | propose | select | stop | aggregate | answer")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EdgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(alias="from")
    target: str = Field(alias="to")


class ConditionalEdgeSpec(BaseModel):
    """After ``from``: go to ``then`` when ``when`` holds, else to ``else``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(alias="from")
    when: str = Field(description="a condition name, e.g. agree, confident")
    threshold: float | None = Field(None, description="for conditions that compare a number")
    then: str
    otherwise: str = Field(alias="else")


class GraphSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, description="informational; a graph's name is its path under graphs/")
    description: str = ""
    experts: Literal["pool"] | list[str] = Field(
        "pool", description="the expert pool: names, or 'pool' to take it from outside (--experts, config)"
    )
    entry: str
    exit: str
    nodes: dict[str, NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)
    conditional_edges: list[ConditionalEdgeSpec] = Field(default_factory=list)

    @field_validator("edges", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """Accept ``[a, b]`` as shorthand for ``{from: a, to: b}``."""
        if isinstance(value, list):
            return [
                {"from": item[0], "to": item[1]}
                if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
                else item
                for item in value
            ]
        return value

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, nodes: dict[str, NodeSpec]) -> dict[str, NodeSpec]:
        import re

        bad = [name for name in nodes if not re.match(NAME_PATTERN, name) or name in ("__start__", "__end__")]
        if bad:
            raise ValueError(f"invalid node name(s): {', '.join(bad)}")
        return nodes

    @model_validator(mode="after")
    def _distinct_pool(self) -> GraphSpec:
        if isinstance(self.experts, list) and len(set(self.experts)) != len(self.experts):
            raise ValueError("experts: names repeat")
        return self
