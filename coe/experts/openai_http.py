"""Experts on OpenAI-compatible servers (llama.cpp, vLLM, any ``backend: openai``), streamed over
one pooled ``aiohttp.ClientSession`` per expert (about a quarter of httpx's cost per call, which
is most of what coe adds to a request; ``benchmarks/overhead.py``).

Every call streams (``stream: true`` with usage in the last event): text reaches the caller as the
server produces it, and a stream left before its end closes its connection (synchronously, so no
second cancellation can interrupt it), which llama.cpp and vLLM take as the signal to stop
generating. A 4xx becomes ``ExpertRejected`` (never retried; a prompt too
long for the context is ``context_length_exceeded``); anything else that goes wrong becomes
``ExpertError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp

from coe.config import ExpertConfig
from coe.errors import ExpertError, ExpertRejected
from coe.experts.base import ExpertClient
from coe.experts.prompting import priced, request_fields
from coe.types import Chunk, ExpertRequest

#: tokens a chat template may add around the messages (role markers, a default system prompt)
_TEMPLATE_TOKENS = 64
#: phrases servers use when a prompt does not fit the context (llama.cpp, vLLM, OpenAI)
_CONTEXT_HINTS = ("context size", "context length", "maximum context", "exceed_context", "context_length")


def api_key(name: str) -> str:
    """The key for expert ``name``: ``COE_KEY_<NAME>`` (upper case, ``-`` as ``_``), else ``none``."""
    return os.environ.get(f"COE_KEY_{name.upper().replace('-', '_').replace('.', '_')}", "none")


def rejection(expert: str, status: int, body: bytes) -> ExpertRejected:
    """An upstream 4xx as ``ExpertRejected``, with the upstream's own message."""
    message = body.decode(errors="replace")[:2000]
    error: Any = None
    with contextlib.suppress(ValueError, AttributeError):
        error = json.loads(body).get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or message)
    elif isinstance(error, str):
        message = error
    lowered = f"{message} {error}".lower()
    code = "context_length_exceeded" if any(h in lowered for h in _CONTEXT_HINTS) else None
    return ExpertRejected(expert, f"HTTP {status}: {message}", status, code)


class OpenAIHTTPExpert(ExpertClient):
    """One expert behind an OpenAI-compatible ``base_url`` (``.../v1``)."""

    def __init__(self, config: ExpertConfig, base_url: str, default_max_tokens: int = 512) -> None:
        self.name = config.name
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.default_max_tokens = default_max_tokens
        self._http: aiohttp.ClientSession | None = None
        # Servers coe launches (and the compose services) answer to the expert's name.
        self.model = config.model if config.backend == "openai" else config.name
        self.path = "/chat/completions" if config.api == "chat" else "/completions"

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = self.config.timeout_s
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {api_key(self.name)}"},
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency * 2),
                timeout=aiohttp.ClientTimeout(connect=min(10.0, timeout), sock_read=timeout),
                read_bufsize=1 << 20,
            )
        return self._http

    def body(self, request: ExpertRequest) -> dict[str, Any]:
        body = {
            "model": self.model,
            **request_fields(self.config, request, self.default_max_tokens),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.json_schema is not None:
            if self.config.api == "chat":
                schema = {"name": "answer", "schema": dict(request.json_schema)}
                body["response_format"] = {"type": "json_schema", "json_schema": schema}
            else:  # llama.cpp and vLLM accept a schema for plain completions in the body
                body["json_schema"] = dict(request.json_schema)
        return body

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        started = time.monotonic()
        body = self.body(request)
        try:
            await self._check_context(body)
            response = await self._post(body)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ExpertError(self.name, f"{type(err).__name__}: {err}") from err
        try:
            if response.status >= 400:
                error = await response.read()
                if response.status < 500:
                    raise rejection(self.name, response.status, error)
                raise ExpertError(self.name, f"HTTP {response.status}: {error[:500]!r}")
            async for chunk in self._chunks(response, started):
                yield chunk
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise ExpertError(self.name, f"{type(err).__name__}: {err}") from err
        finally:
            # Read to its end, the connection goes back to the pool; left early (the caller
            # stopped, a cancellation, an error), it is closed, and the server stops generating.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def _post(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = self.base_url + self.path
        try:
            return await self._client().post(url, json=body)
        except aiohttp.ServerDisconnectedError:
            # A pooled keep-alive connection the server had closed meanwhile: nothing came back, so
            # the request goes once more, on a new connection (a dead server then refuses it).
            return await self._client().post(url, json=body)

    async def _check_context(self, body: dict[str, Any]) -> None:
        """Refuse a prompt plus ``max_tokens`` beyond the expert's context before calling, as
        OpenAI does (llama.cpp would silently cut the answer short). Counted exactly with the
        server's tokenizer only when a cheap upper bound (a token is at least one byte, plus the
        chat template's tokens) says it might not fit; servers without a tokenizer endpoint map
        their own error instead."""
        if self.config.backend not in ("llamacpp", "vllm"):
            return
        text = body.get("prompt") or json.dumps(body.get("messages"), ensure_ascii=False)
        bound = len(str(text).encode()) + _TEMPLATE_TOKENS + 8 * len(body.get("messages") or ())
        context, wanted = self.config.context_size, int(body["max_tokens"])
        if bound + wanted <= context:
            return
        prompt_tokens = await self._count_tokens(body)
        if prompt_tokens + wanted > context:
            raise ExpertRejected(
                self.name,
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, {wanted} in the "
                "completion). Please reduce the length of the messages or completion.",
                400,
                "context_length_exceeded",
            )

    async def _count_tokens(self, body: dict[str, Any]) -> int:
        root = self.base_url.removesuffix("/v1")
        http = self._client()
        if self.config.backend == "vllm":
            query: dict[str, Any] = {k: body[k] for k in ("model", "messages", "prompt") if k in body}
            return int((await self._get_json(http, f"{root}/tokenize", query))["count"])
        prompt = body.get("prompt")
        if prompt is None:  # llama.cpp: render the chat template, then count
            rendered = await self._get_json(http, f"{root}/apply-template", {"messages": body["messages"]})
            prompt = rendered["prompt"]
        return len((await self._get_json(http, f"{root}/tokenize", {"content": prompt}))["tokens"])

    @staticmethod
    async def _get_json(http: aiohttp.ClientSession, url: str, body: Mapping[str, Any]) -> Any:
        async with http.post(url, json=body, raise_for_status=True) as response:
            return await response.json()

    async def _chunks(self, response: aiohttp.ClientResponse, started: float) -> AsyncGenerator[Chunk, None]:
        text_seen = False
        finish: str | None = None
        usage: dict[str, Any] = {}
        pieces = 0
        done = False
        async for raw in response.content:
            if done or not raw.startswith(b"data:"):
                continue  # after [DONE], read on to the body's end so the connection is reused
            data = raw[5:].strip().decode()
            if data == "[DONE]":
                done = True
                continue
            event = self._event(data)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                finish = choice.get("finish_reason") or finish
                text = self._text(choice)
                if not text_seen:
                    text = text.lstrip()  # answers start at their first visible character
                if text:
                    text_seen = True
                    pieces += 1
                    yield Chunk(text)
        if not text_seen:
            raise ExpertError(self.name, "returned an empty answer")
        yield Chunk(
            usage=priced(
                self.config,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or pieces),
                time.monotonic() - started,
            ),
            finish_reason=finish or "stop",
        )

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise ExpertError(self.name, f"unreadable stream event: {data[:200]!r}") from None
        if not isinstance(event, dict):
            raise ExpertError(self.name, f"unexpected stream event: {data[:200]!r}")
        if event.get("error"):
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise ExpertError(self.name, f"failed mid-stream: {message}")
        return event

    def _text(self, choice: dict[str, Any]) -> str:
        if self.config.api == "chat":
            return str((choice.get("delta") or {}).get("content") or "")
        return str(choice.get("text") or "")

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()
