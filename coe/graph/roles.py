"""SMoA's role descriptions: written once per (graph, task) by one expert, then cached.

A task is what ``metadata.task`` of the request names (``coe eval`` sets the dataset and the
question's category); without one, the graph's own task description (chat). The generating call
has role ``roles`` and asks for JSON ``{"roles": [...]}`` (schema-constrained where the server
supports it); text that is not JSON is split into paragraphs. The descriptions are cached under a
key of the graph, the task, the expert, how many and the prompt, so a second run makes no call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coe.errors import ExpertError
from coe.graph.cache import TextCache
from coe.graph.nodes.base import ExpertLookup
from coe.graph.nodes.judging import first_json_object
from coe.pipeline import RunParams, Trace, call_expert
from coe.prompts import Prompt

__all__ = ["RoleGeneration", "RoleWriter", "parse_roles", "task_of"]

#: how a chat request's task is described when the graph does not say
CHAT_TASK = "answering the questions and requests that users send to a general-purpose assistant"


class RoleGeneration(BaseModel):
    """How a ``propose`` node gets its role descriptions written (SMoA)."""

    model_config = ConfigDict(extra="forbid")
    expert: str = Field(description="who writes them (SMoA: the aggregator's model)")
    task: str = Field(CHAT_TASK, description="the task of chat requests (coe eval names its own)")
    max_tokens: int = Field(400, gt=0)
    temperature: float = Field(0.7, ge=0, le=2)
    prompt: str = Field("roles.generate", description="a prompt name (coe.prompts) or its text")


def task_of(metadata: Mapping[str, Any], default: str) -> str:
    task = metadata.get("task")
    return task if isinstance(task, str) and task.strip() else default


def roles_schema(n: int) -> dict[str, Any]:
    role = {"type": "string"}  # no length bounds: llama.cpp grammars make them very slow
    roles = {"type": "array", "items": role, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"roles": roles}, "required": ["roles"]}


_MARKER = re.compile(
    r"^\s*(?:\[?\s*(?:generated\s+)?role(?:\s+description)?\s*\d*\s*\]?[:.]?|\d+[.)])\s*", re.I
)


_ADDRESSED = re.compile(r"(?:you are|you're)\b", re.I)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_roles(text: str, n: int) -> list[str]:
    """Up to ``n`` role descriptions: the JSON ``roles`` list, else the paragraphs or numbered
    items that address the model ("You are ...")."""
    verdict = first_json_object(text)
    if verdict is None:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = None
        verdict = loaded if isinstance(loaded, dict) else None
    if verdict is not None and isinstance(verdict.get("roles"), list):
        found = [r.strip() for r in verdict["roles"] if isinstance(r, str) and len(r.strip()) >= 8]
    elif '"roles"' in text:  # JSON cut short by max_tokens: its complete strings
        strings = [json.loads(f'"{m}"') for m in _STRING.findall(text.split('"roles"', 1)[1])]
        found = [r.strip() for r in strings if len(r.strip()) >= 20 and _ADDRESSED.match(r.strip())]
    else:
        parts = re.split(r"\n\s*\n|\n(?=\s*(?:\[?\s*generated role|\d+[.)]))", text, flags=re.I)
        found = [_MARKER.sub("", p).strip() for p in parts]
        found = [p for p in found if len(p) >= 20 and _ADDRESSED.match(p)]
    return found[:n]


@dataclass(frozen=True, slots=True)
class Written:
    """Role descriptions, and the trace calls made to write them (none when cached)."""

    roles: list[str]
    calls: list[dict[str, Any]]
    cached: bool


class RoleWriter:
    """Writes (or finds in ``cache``) the role descriptions of one graph's proposers."""

    def __init__(self, graph: str, node: str, spec: RoleGeneration, prompt: Prompt, cache: TextCache) -> None:
        self.graph = graph
        self.node = node
        self.spec = spec
        self.prompt = prompt
        self.cache = cache
        self._locks: dict[str, asyncio.Lock] = {}

    def key(self, task: str, n: int) -> str:
        ident = json.dumps([self.graph, task, self.spec.expert, n, self.prompt.text], ensure_ascii=False)
        return f"roles:{self.graph}:{hashlib.sha256(ident.encode()).hexdigest()[:24]}"

    async def roles(
        self, lookup: ExpertLookup, task: str, n: int, request: RunParams, *, generate: bool = True
    ) -> Written:
        """The cached descriptions, else (when ``generate``) freshly written ones."""
        key = self.key(task, n)
        async with self._locks.setdefault(key, asyncio.Lock()):  # one generation per task at a time
            stored = await self.cache.get(key)
            if stored is not None:
                return Written(list(json.loads(stored)["roles"]), [], True)
            if not generate:
                return Written([], [], False)
            trace = Trace(self.graph)
            try:
                reply = await call_expert(
                    lookup.client(self.spec.expert),
                    [{"role": "user", "content": self.prompt.render(n=n, task=task)}],
                    RunParams(
                        max_tokens=self.spec.max_tokens,
                        temperature=self.spec.temperature,
                        json_schema=roles_schema(n),
                        metadata=request.metadata,
                    ),
                    trace,
                    self.node,
                    "roles",
                    prompt=self.prompt.name,
                )
            except ExpertError:
                return Written([], trace.calls, False)  # the proposers go on without roles
            roles = parse_roles(reply.content, n)
            if roles:
                await self.cache.put(key, json.dumps({"task": task, "roles": roles}, ensure_ascii=False))
            return Written(roles, trace.calls, False)
