"""What the LLM aggregators share: one expert call, role ``aggregate``, under the request's limits."""

from __future__ import annotations

import dataclasses

from coe.aggregators.base import Aggregate, AggregatorContext
from coe.errors import UserError
from coe.experts.base import Emit
from coe.pipeline import RunParams, Trace, call_expert
from coe.prompts import Prompt
from coe.types import Message


async def synthesis_call(
    context: AggregatorContext,
    expert: str,
    messages: list[Message],
    prompt: Prompt,
    request: RunParams | None,
    max_tokens: int | None,
    temperature: float | None,
    emit: Emit | None,
) -> Aggregate:
    """Ask ``expert`` to write the answer; it streams through ``emit`` and obeys the request's
    ``max_tokens`` (the answer's length is the client's to set) unless the graph sets one."""
    if context.lookup is None:
        raise UserError("an LLM aggregator needs experts to call")
    base = request or RunParams()
    run = dataclasses.replace(
        base,
        max_tokens=max_tokens or base.max_tokens,
        temperature=temperature if temperature is not None else base.temperature,
        json_schema=None,
    )
    trace = Trace("aggregate")
    result = await call_expert(
        context.lookup.client(expert),
        messages,
        run,
        trace,
        context.node,
        "aggregate",
        emit,
        prompt=prompt.name,
    )
    detail = {"method": "synthesize", "expert": expert, "prompt": prompt.name, "calls": trace.calls}
    return Aggregate(result.content, (expert,), detail, result.finish_reason)
