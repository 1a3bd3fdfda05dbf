"""What every expert client does to a request before sending it: the expert's own system prompt,
the conversation rendered for base models, generation parameters, and the price of a call."""

from __future__ import annotations

from typing import Any

from coe.config import ExpertConfig
from coe.types import ExpertRequest, Message, Messages, Usage


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


def request_fields(config: ExpertConfig, request: ExpertRequest, default_max_tokens: int) -> dict[str, Any]:
    """The OpenAI request fields of one call: prompt or messages, and generation parameters."""
    messages = with_system_prompt(request.messages, config.system_prompt)
    fields: dict[str, Any] = (
        {"messages": messages}
        if config.api == "chat"
        else {"prompt": render_prompt(messages, config.prompt_template)}
    )
    fields["max_tokens"] = request.max_tokens or config.max_tokens or default_max_tokens
    temperature = request.temperature if request.temperature is not None else config.temperature
    if temperature is not None:
        fields["temperature"] = temperature
    stop = [*config.stop, *request.stop]
    if stop:
        fields["stop"] = stop
    fields.update(request.sampling)
    return fields


def priced(config: ExpertConfig, prompt_tokens: int, completion_tokens: int, latency_s: float) -> Usage:
    price = config.price
    cost = (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1e6
    return Usage(prompt_tokens, completion_tokens, cost, latency_s)
