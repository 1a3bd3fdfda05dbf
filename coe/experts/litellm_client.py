"""Experts reached through litellm's adapters (``backend: litellm``): cloud and other providers
that do not speak OpenAI's protocol themselves. OpenAI-compatible servers (llama.cpp, vLLM,
``backend: openai``) go through ``coe.experts.openai_http`` instead: no adapter hop.

Streams with ``acompletion(stream=True)`` / ``atext_completion(stream=True)``; litellm is imported
on first use, with its cost map read locally.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any

from coe.config import ExpertConfig
from coe.errors import ExpertError, ExpertRejected
from coe.experts.base import ExpertClient
from coe.experts.openai_http import api_key
from coe.experts.prompting import priced, request_fields
from coe.types import Chunk, ExpertRequest

_configured = False


def load_litellm() -> Any:
    """Import litellm on first use, with no network access at import time."""
    global _configured
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    if not _configured:
        litellm.disable_aiohttp_transport = True  # httpx transport: closes cleanly on shutdown
        litellm.suppress_debug_info = True
        litellm.telemetry = False
        _configured = True
    return litellm


async def close_litellm_clients() -> None:
    """Close the HTTP clients litellm caches, so none is left open when the event loop ends."""
    if "litellm" not in sys.modules:
        return
    from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

    await close_litellm_async_clients()  # type: ignore[no-untyped-call]
    sys.modules["litellm"].in_memory_llm_clients_cache.flush_cache()


class LiteLLMExpert(ExpertClient):
    """One expert reached through litellm; raises ``ExpertError`` on any failure."""

    def __init__(self, config: ExpertConfig, base_url: str | None, default_max_tokens: int = 512) -> None:
        self.name = config.name
        self.config = config
        self.base_url = base_url
        self.default_max_tokens = default_max_tokens

    def kwargs(self, request: ExpertRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            **request_fields(self.config, request, self.default_max_tokens),
            "num_retries": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "timeout": self.config.timeout_s,
        }
        if self.base_url:
            kwargs["api_base"] = self.base_url
            kwargs["api_key"] = api_key(self.name)
        if request.json_schema is not None:
            schema = {"name": "answer", "schema": dict(request.json_schema)}
            kwargs["response_format"] = {"type": "json_schema", "json_schema": schema}
        return kwargs

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        litellm = load_litellm()
        kwargs = self.kwargs(request)
        call = litellm.acompletion if "messages" in kwargs else litellm.atext_completion
        started = time.monotonic()
        text_seen, finish, usage, pieces = False, None, None, 0
        try:
            response = await call(**kwargs)
            async for event in response:
                usage = getattr(event, "usage", None) or usage
                for choice in event.choices or ():
                    finish = choice.finish_reason or finish
                    delta = getattr(choice, "delta", None)
                    text = (delta.content if delta is not None else getattr(choice, "text", "")) or ""
                    text = text if text_seen else text.lstrip()
                    if text:
                        text_seen, pieces = True, pieces + 1
                        yield Chunk(text)
        except Exception as err:  # litellm raises many types; all become one upstream error
            status = getattr(err, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500:
                raise ExpertRejected(self.name, f"{type(err).__name__}: {err}", status) from err
            raise ExpertError(self.name, f"{type(err).__name__}: {err}") from err
        if not text_seen:
            raise ExpertError(self.name, "returned an empty answer")
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or pieces)
        usage_ = priced(self.config, prompt_tokens, completion_tokens, time.monotonic() - started)
        yield Chunk(usage=usage_, finish_reason=str(finish or "stop"))
