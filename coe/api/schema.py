"""Response models: what the OpenAPI document (``/openapi.json``) says each route answers. The
handlers build plain dicts (``coe.api.protocol``); these describe them, and the fuzz test checks
that the two agree."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class UsageBody(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """A whole answer. ``coe`` is the trace: route decision, every expert call, selections, stops,
    aggregation, usage and wall time."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: UsageBody
    coe: dict[str, Any]


class ModelCard(BaseModel):
    id: str = Field(description="the graph's name, for the request's `model`")
    object: Literal["model"]
    created: int
    owned_by: str
    description: str
    experts: list[str]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    down: list[str]
    graphs: list[str]
    experts: dict[str, dict[str, Any]]


class Ready(BaseModel):
    status: Literal["ready"]


SSE = (
    "With `stream: true`: Server-Sent Events, one `data: {chat.completion.chunk}` per piece of the "
    "answer; the last chunk before `data: [DONE]` has no choices and carries `usage` and the `coe` "
    'trace. A failure after the stream began ends it with one `data: {"error": {...}}` event and '
    "no `[DONE]`."
)
#: one event of the stream (Open API 3.1: a text/event-stream schema describes each event)
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": SSE,
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "JSON: a chat.completion.chunk, or the error that ended the stream; or [DONE]",
        }
    },
}
ERRORS = {
    400: "The request is malformed or asks for what coe cannot do",
    401: "No valid API key (`Authorization: Bearer KEY`)",
    404: "No graph of that name is served",
    413: "The body is larger than `max_body_bytes`",
    429: "The key's rate limit, or an expert's queue, is full: see `Retry-After`",
    500: "An unexpected error (logged with the request id)",
    502: "An expert failed after its retries",
    503: "An expert the graph needs is down",
    504: "No answer within `request_timeout_s`, or an expert timed out",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with OpenAI's error body."""
    return {s: {"model": ErrorResponse, "description": ERRORS[s]} for s in statuses}


CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The answer (JSON), or with `stream: true` its events (text/event-stream)",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    },
    **errors(400, 401, 404, 413, 429, 500, 502, 503, 504),
}


def drop_422(openapi: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 for every body; coe answers malformed input with 400 instead."""
    for path in openapi.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    schemas = openapi.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return openapi
