"""OpenAI's Batch API: ``/v1/files`` and ``/v1/batches``. Handlers translate HTTP to the
service's ``BatchAPI`` (``coe.batch.openai_api``) and back; here only the input file's lines are
read as chat completion requests (the same request model as ``/v1/chat/completions``), each
refused line kept with its reason for the error file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator
from email.message import Message as EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from coe.api.protocol import ChatCompletionRequest
from coe.batch.openai_api import ENDPOINT, BatchAPI, Line, NotFound
from coe.batch.store import BatchItem
from coe.errors import InvalidRequest
from coe.service import Service

router = APIRouter()


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = Field(None, max_length=16)


def _api(request: Request) -> tuple[Service, BatchAPI]:
    service: Service = request.app.state.service
    if service.batch_api is None:
        raise HTTPException(503, "The Batch API needs Redis: it runs in `coe serve`.")
    return service, service.batch_api


@contextlib.contextmanager
def _found() -> Iterator[None]:
    """A missing file or batch is a 404 with OpenAI's body."""
    try:
        yield
    except NotFound as err:
        raise HTTPException(404, str(err)) from None


def _form(content_type: str, body: bytes) -> dict[str, EmailMessage]:
    """The parts of a ``multipart/form-data`` body by field name (no python-multipart needed)."""
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest("Expected a multipart/form-data body with `file` and `purpose`.", None)
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts: dict[str, EmailMessage] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part
    return parts


def _field(parts: dict[str, EmailMessage], name: str) -> bytes:
    part = parts.get(name)
    payload = part.get_payload(decode=True) if part is not None else b""
    return payload if isinstance(payload, bytes) else b""


@router.post("/files")
async def create_file(request: Request) -> dict[str, Any]:
    _, api = _api(request)
    with _found():
        parts = _form(request.headers.get("content-type", ""), await request.body())
        if "file" not in parts:
            raise InvalidRequest("Missing the `file` field.", "file")
        purpose = _field(parts, "purpose").decode(errors="replace")
        if purpose != "batch":
            raise InvalidRequest(
                f"purpose: {purpose!r} is not supported; coe takes 'batch' files.", "purpose"
            )
        content = _field(parts, "file")
        return await api.create_file(
            bytes(content or b""), parts["file"].get_filename() or "file.jsonl", purpose
        )


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> dict[str, Any]:
    _, api = _api(request)
    with _found():
        return await api.file(file_id)


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> Response:
    _, api = _api(request)
    with _found():
        return Response(await api.file_content(file_id), media_type="application/jsonl")


@router.post("/batches")
async def create_batch(body: CreateBatch, request: Request) -> dict[str, Any]:
    service, api = _api(request)
    with _found():
        if body.endpoint != ENDPOINT:
            raise InvalidRequest(f"endpoint: only {ENDPOINT} is supported.", "endpoint", "invalid_value")
        if body.completion_window != "24h":
            raise InvalidRequest(
                "completion_window: only '24h' is supported.", "completion_window", "invalid_value"
            )
        file = await api.file(body.input_file_id)
        if file["purpose"] != "batch":
            raise InvalidRequest("input_file_id: the file's purpose is not 'batch'.", "input_file_id")
        content = await api.file_content(body.input_file_id)
        graph, items, lines = read_lines(content, service.pipelines, service.settings.max_messages)
        return await api.create_batch(
            input_file_id=body.input_file_id,
            completion_window=body.completion_window,
            metadata=body.metadata,
            graph=graph,
            pool=service.pool.names,
            items=items,
            lines=lines,
        )


@router.get("/batches")
async def list_batches(
    request: Request, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, Any]:
    _, api = _api(request)
    with _found():
        return await api.list(after, limit)


@router.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request) -> dict[str, Any]:
    _, api = _api(request)
    with _found():
        return await api.retrieve(batch_id)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    _, api = _api(request)
    with _found():
        return await api.cancel(batch_id)


# --- the input file --------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, custom_id: str | None, code: str, message: str) -> None:
        super().__init__(message)
        self.custom_id = custom_id
        self.code = code


def _validation_message(err: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors())


def _line(text: str, graphs: Collection[str], max_messages: int) -> tuple[str, BatchItem]:
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise _Refused(None, "invalid_json", f"the line is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise _Refused(None, "invalid_request", "the line is not a JSON object")
    custom_id = raw.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _Refused(None, "missing_custom_id", "custom_id must be a non-empty string")
    if raw.get("method") != "POST":
        raise _Refused(custom_id, "invalid_method", f"method must be POST, not {raw.get('method')!r}")
    if raw.get("url") != ENDPOINT:
        raise _Refused(custom_id, "invalid_url", f"url must be {ENDPOINT}, not {raw.get('url')!r}")
    try:
        request = ChatCompletionRequest.model_validate(raw.get("body"))
        request.refuse_unsupported(max_messages)
    except pydantic.ValidationError as err:
        raise _Refused(custom_id, "invalid_request", "body: " + _validation_message(err)) from None
    except InvalidRequest as err:
        raise _Refused(custom_id, err.code, str(err)) from None
    if request.stream:
        raise _Refused(custom_id, "unsupported_value", "stream: a batch request cannot stream")
    if request.model not in graphs:
        raise _Refused(custom_id, "model_not_found", f"model: no graph named {request.model!r} is served")
    params = request.params()
    own: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    own.update(stop=list(params.stop), sampling=dict(params.sampling))
    item = BatchItem(custom_id, request.chat_messages(), params={k: v for k, v in own.items() if v})
    return request.model, item


def read_lines(
    content: bytes, graphs: Collection[str], max_messages: int
) -> tuple[str | None, list[BatchItem], list[Line]]:
    """The batch's graph, the items to run, and every input line (refused ones with a reason)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("input_file_id: the file is not UTF-8 JSONL.", "input_file_id") from None
    graph: str | None = None
    items: list[BatchItem] = []
    lines: list[Line] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            model, item = _line(raw, graphs, max_messages)
            if item.id in seen:
                raise _Refused(
                    item.id, "duplicate_custom_id", f"custom_id {item.id!r} is used by an earlier line"
                )
            if graph is not None and model != graph:
                message = f"model: every request of a batch must name one graph ({graph!r}), not {model!r}"
                raise _Refused(item.id, "mismatched_model", message)
        except _Refused as refused:
            lines.append(Line(number, refused.custom_id, refused.code, str(refused)))
            continue
        graph = model
        seen.add(item.id)
        items.append(item)
        lines.append(Line(number, item.id))
    return graph, items, lines
