"""One queued expert call and what a worker stored for it.

A call is identified by ``(batch, item, stage, expert, sample)``: ``stage`` is the graph node and
loop round that made it (``experts#0``), ``sample`` counts repeated calls to the same expert in
that stage. The id is stable across restarts of the driver, so a result stored once is found
again instead of being recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from coe.errors import ExpertError
from coe.types import Completion, ExpertRequest, Message, Usage


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class CallKey:
    batch: str
    item: str
    stage: str
    expert: str
    sample: int = 0

    @property
    def id(self) -> str:
        return ":".join((self.batch, quote(self.item, safe=""), self.stage, self.expert, str(self.sample)))


@dataclass(frozen=True, slots=True)
class Call:
    """A call as it travels on an expert's stream."""

    key: CallKey
    request: ExpertRequest
    #: seconds since the epoch after which nobody waits for the answer (online calls); 0: never
    deadline: float = 0.0

    def expired(self, now: float) -> bool:
        return 0 < self.deadline < now

    def fields(self) -> dict[str, str]:
        request = {
            "messages": list(self.request.messages),
            "max_tokens": self.request.max_tokens,
            "temperature": self.request.temperature,
            "stop": list(self.request.stop),
            "metadata": dict(self.request.metadata),
            "json_schema": dict(self.request.json_schema) if self.request.json_schema is not None else None,
            "sampling": dict(self.request.sampling),
        }
        fields = {
            "id": self.key.id,
            "batch": self.key.batch,
            "item": self.key.item,
            "stage": self.key.stage,
            "expert": self.key.expert,
            "sample": str(self.key.sample),
            "request": json.dumps(request, ensure_ascii=False),
        }
        if self.deadline:
            fields["deadline"] = f"{self.deadline:.3f}"
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> Call:
        data = {_text(k): _text(v) for k, v in fields.items()}
        key = CallKey(data["batch"], data["item"], data["stage"], data["expert"], int(data["sample"]))
        raw = json.loads(data["request"])
        messages: list[Message] = raw["messages"]
        request = ExpertRequest(
            messages,
            raw["max_tokens"],
            raw["temperature"],
            tuple(raw["stop"]),
            raw["metadata"],
            raw.get("json_schema"),
            raw.get("sampling") or {},
        )
        return cls(key, request, float(data.get("deadline") or 0.0))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker stored for a call: its completion, or the error after its last attempt.

    ``load`` names the model load that served it (``worker/expert#n``); ``resident`` is the most
    models that worker has held at once so far.
    """

    content: str | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    error: str | None = None
    worker: str = ""
    load: str = ""
    resident: int = 0
    attempts: int = 1

    def completion(self, expert: str) -> Completion:
        if self.error is not None or self.content is None:
            raise ExpertError(expert, self.error or "no answer stored")
        return Completion(self.content, self.usage, self.finish_reason)

    def to_json(self) -> str:
        return json.dumps(
            {
                "content": self.content,
                "usage": self.usage.as_dict(),
                "finish_reason": self.finish_reason,
                "error": self.error,
                "worker": self.worker,
                "load": self.load,
                "resident": self.resident,
                "attempts": self.attempts,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Outcome:
        raw = json.loads(text)
        usage = raw["usage"]
        return cls(
            content=raw["content"],
            usage=Usage(
                usage["prompt_tokens"], usage["completion_tokens"], usage["cost"], usage["latency_s"]
            ),
            finish_reason=raw["finish_reason"],
            error=raw["error"],
            worker=raw["worker"],
            load=raw["load"],
            resident=raw["resident"],
            attempts=raw["attempts"],
        )
