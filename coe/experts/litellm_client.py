"""The one client path to live experts: litellm's ``acompletion`` / ``atext_completion``.

Works with any OpenAI-compatible server (vLLM, llama.cpp) and any litellm provider. Chat experts
get messages (with the expert's own system prompt in front); completion experts (base models
without a chat template) get the conversation rendered into their ``prompt_template``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from coe.config import ExpertConfig
from coe.errors import ExpertError
from coe.experts.base import ExpertClient
from coe.types import Completion, ExpertRequest, Message, Messages, Usage

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


def with_system_prompt(messages: Messages, system_prompt: str | None) -> list[Message]:
    """Put the expert's system prompt in front of the request's own (if any)."""
    out = list(messages)
    if not system_prompt:
        return out
    if out and out[0]["role"] == "system":
        return [{"role": "system", "content": f"{system_prompt}\n\n{out[0]['content']}"}, *out[1:]]
    return [{"role": "system", "content": system_prompt}, *out]


def render_prompt(messages: Messages, template: str) -> str:
    """Render a conversation for a base model: turns joined by blank lines, then the template."""
    parts = []
    for message in messages:
        text = message["content"]
        parts.append(f"Answer: {text}" if message["role"] == "assistant" else text)
    return template.replace("{prompt}", "\n\n".join(parts))


class LiteLLMExpert(ExpertClient):
    """One expert reached through litellm; raises ``ExpertError`` on any failure."""

    def __init__(self, config: ExpertConfig, base_url: str | None, default_max_tokens: int = 512) -> None:
        self.name = config.name
        self.config = config
        self.base_url = base_url
        self.default_max_tokens = default_max_tokens
        self._client: Any = None

    def _openai_client(self) -> Any:
        """Our own HTTP client for OpenAI-compatible servers: pooled per expert, closed in ``aclose``."""
        if self.config.backend == "litellm" or not self.base_url:
            return None
        if self._client is None:
            import httpx
            import openai

            limits = httpx.Limits(max_connections=self.config.max_concurrency * 2)
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key(),
                max_retries=0,
                http_client=httpx.AsyncClient(limits=limits, timeout=self.config.timeout_s),
            )
        return self._client

    def _api_key(self) -> str:
        return os.environ.get(f"COE_KEY_{self.name.upper().replace('-', '_')}", "none")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _model(self) -> str:
        if self.config.backend == "litellm":
            return self.config.model
        prefix = "openai" if self.config.api == "chat" else "text-completion-openai"
        return f"{prefix}/{self.config.name}"

    def _kwargs(self, request: ExpertRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self._model(),
            "max_tokens": request.max_tokens or self.config.max_tokens or self.default_max_tokens,
            "num_retries": 0,
        }
        temperature = request.temperature if request.temperature is not None else self.config.temperature
        if temperature is not None:
            kwargs["temperature"] = temperature
        stop = [*self.config.stop, *request.stop]
        if stop:
            kwargs["stop"] = stop
        if self.base_url:
            kwargs["api_base"] = self.base_url
            kwargs["api_key"] = self._api_key()
        if request.json_schema is not None:
            schema = {"name": "answer", "schema": dict(request.json_schema)}
            if self.config.api == "chat":
                kwargs["response_format"] = {"type": "json_schema", "json_schema": schema}
            else:  # llama.cpp and vLLM accept a schema for plain completions in the body
                kwargs["extra_body"] = {"json_schema": dict(request.json_schema)}
        client = self._openai_client()
        if client is not None:
            kwargs["client"] = client
        return kwargs

    async def complete(self, request: ExpertRequest) -> Completion:
        litellm = load_litellm()
        messages = with_system_prompt(request.messages, self.config.system_prompt)
        started = time.monotonic()
        try:
            if self.config.api == "chat":
                response = await litellm.acompletion(messages=messages, **self._kwargs(request))
                choice = response.choices[0]
                content = choice.message.content
            else:
                prompt = render_prompt(messages, self.config.prompt_template)
                response = await litellm.atext_completion(prompt=prompt, **self._kwargs(request))
                choice = response.choices[0]
                content = choice.text
        except Exception as err:  # litellm raises many types; all become one upstream error
            raise ExpertError(self.name, f"{type(err).__name__}: {err}") from err
        latency = time.monotonic() - started
        if not content or not content.strip():
            raise ExpertError(self.name, "returned an empty answer")
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        price = self.config.price
        cost = (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6
        return Completion(
            content=content.strip(),
            usage=Usage(prompt_tokens, completion_tokens, cost, latency),
            finish_reason=str(choice.finish_reason or "stop"),
        )
