"""The few types every layer speaks: messages, usage, route decisions, candidate answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Role = Literal["system", "user", "assistant", "tool", "developer"]


class Message(TypedDict):
    role: Role
    content: str


Messages = Sequence[Message]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens, cost (USD) and wall time of one or more expert calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost + other.cost,
            self.latency_s + other.latency_s,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 10),
            "latency_s": round(self.latency_s, 4),
        }


@dataclass(frozen=True, slots=True)
class ExpertRequest:
    """One call to one expert.

    ``metadata`` carries what a replay expert needs to find a recorded answer (``question_id``,
    ``question``); live experts ignore it and routers never read it.
    """

    messages: Messages
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: a JSON Schema the answer must follow (servers that support constrained output enforce it)
    json_schema: Mapping[str, Any] | None = None
    #: other sampling parameters, sent as given (``top_p``, ``seed``, ``presence_penalty``, ...)
    sampling: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of an expert's answer as it streams.

    ``text`` is the new text; the last chunk of a stream carries the call's ``usage`` and the
    expert's ``finish_reason`` (``"length"`` when cut by ``max_tokens``). A whole answer may come
    as one chunk that carries all three.
    """

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """What an expert answered, with its usage."""

    content: str
    usage: Usage = Usage()
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Which experts a router chose for one request, and why."""

    experts: tuple[str, ...]
    primary: str | None = None
    category: str | None = None
    skills: tuple[str, ...] = ()
    confidence: float | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    router: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "router": self.router,
            "experts": list(self.experts),
            "primary": self.primary,
            "category": self.category,
            "skills": list(self.skills),
            "confidence": self.confidence,
            "weights": dict(self.weights),
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One expert's answer inside a graph run."""

    expert: str
    content: str
    usage: Usage = Usage()
    role: str | None = None
    weight: float = 1.0
    finish_reason: str = "stop"

    def as_dict(self) -> dict[str, Any]:
        return {
            "expert": self.expert,
            "role": self.role,
            "content": self.content,
            "weight": self.weight,
            "finish_reason": self.finish_reason,
            "usage": self.usage.as_dict(),
        }
