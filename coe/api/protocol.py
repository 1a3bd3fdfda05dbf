"""OpenAI wire format: request models (unknown fields accepted and logged), response builders and
the SSE stream of an answer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coe.api.errors import describe, log_failure
from coe.errors import InvalidRequest
from coe.pipeline import RunParams, RunResult, StreamEvent
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


#: OpenAI parameters coe cannot honour: refused with 400 naming them, never silently ignored.
#: (name -> the values that are fine to send, as OpenAI's defaults)
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "parallel_tool_calls": (None, False, True),
}
#: sampling parameters passed through to the experts as given
SAMPLING = ("top_p", "seed", "presence_penalty", "frequency_penalty")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(
        min_length=1,
        json_schema_extra={"contains": {"type": "object", "properties": {"role": {"const": "user"}}}},
    )
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = Field(None, max_length=4)
    n: int = Field(1, ge=1, json_schema_extra={"maximum": 1})  # more: a 400 that says why
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None

    def refuse_unsupported(self, max_messages: int) -> None:
        """Raise ``InvalidRequest`` naming the first parameter coe cannot honour."""
        if len(self.messages) > max_messages:
            raise InvalidRequest(
                f"messages: {len(self.messages)} messages; at most {max_messages} are accepted",
                "messages",
                "too_many_messages",
            )
        if self.n != 1:
            raise InvalidRequest(
                "n: only one choice per request is supported (n=1)", "n", "unsupported_value"
            )
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidRequest(
                f"response_format: type {self.response_format.type!r} is not supported (only 'text')",
                "response_format",
                "unsupported_value",
            )
        extra = self.model_extra or {}
        for name, fine in UNSUPPORTED.items():
            if name in extra and extra[name] not in fine:
                raise InvalidRequest(f"{name}: not supported by coe's graphs", name, "unsupported_parameter")

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise ValueError("must contain at least one user message")
        if not any(m.text().strip() for m in users):
            # nothing to answer: a model would end at once, and coe refuses empty answers
            raise ValueError("every user message is empty: at least one must hold text")
        return messages

    def unknown_fields(self) -> list[str]:
        return sorted(set(self.model_extra or {}) - set(UNSUPPORTED))

    def chat_messages(self) -> list[Message]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]

    def params(self) -> RunParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        sampling = {name: getattr(self, name) for name in SAMPLING if getattr(self, name) is not None}
        return RunParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=stop,
            metadata=dict(self.metadata or {}),
            sampling=sampling,
        )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def chat_completion(result: RunResult, model: str) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_body(result),
        "coe": result.trace.as_dict(),
    }


def usage_body(result: RunResult) -> dict[str, int]:
    usage = result.trace.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class ChunkBuilder:
    """``chat.completion.chunk`` objects of one streamed answer."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model

    def __call__(self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )


async def stream_events(
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent, None],
    model: str,
    on_result: Callable[[RunResult], object] | None = None,
) -> AsyncIterator[str]:
    """The SSE events of one answer as it is produced: role, content pieces, finish (with the
    expert's finish reason), the trace chunk, ``[DONE]``. A failure ends the stream with one
    ``{"error": ...}`` event and no ``[DONE]``. Closes ``events`` whatever happens; ``on_result``
    sees the finished answer."""
    chunk = ChunkBuilder(model)
    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while not isinstance(event, RunResult):
            yield chunk({"content": event})
            event = await anext(events)
        if on_result is not None:
            on_result(event)
        yield chunk({}, event.finish_reason)
        yield chunk(None, usage=usage_body(event), coe=event.trace.as_dict())
        yield sse("[DONE]")
    except Exception as err:
        status, body = describe(err)
        log_failure(err, status)
        yield sse(body)
    finally:
        await events.aclose()
