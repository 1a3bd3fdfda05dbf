"""OpenAI wire format: request models (unknown fields accepted and logged) and response builders."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coe.pipeline import RunParams, RunResult
from coe.types import Message


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content if part.type == "text" and part.text)
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    user: str | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("must contain at least one user message")
        return messages

    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def chat_messages(self) -> list[Message]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def params(self) -> RunParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return RunParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=stop,
            metadata=dict(self.metadata or {}),
        )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def chat_completion(result: RunResult, model: str) -> dict[str, Any]:
    usage = result.trace.usage
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
        "coe": result.trace.as_dict(),
    }


def _pieces(text: str, size: int = 16) -> Iterator[str]:
    words = text.split(" ")
    for start in range(0, len(words), size):
        chunk = " ".join(words[start : start + size])
        yield chunk if start + size >= len(words) else chunk + " "


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def stream_chunks(result: RunResult, model: str, chunk_id: str, created: int) -> Iterator[str]:
    """The SSE events of one answer: role, content pieces, finish, the trace chunk, ``[DONE]``."""

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    yield sse(chunk({"role": "assistant", "content": ""}))
    for piece in _pieces(result.content):
        yield sse(chunk({"content": piece}))
    yield sse(chunk({}, "stop"))
    usage = result.trace.usage
    yield sse(
        chunk(
            None,
            usage={
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
            coe=result.trace.as_dict(),
        )
    )
    yield sse("[DONE]")
