"""The request's side of an online call that waits on its expert's stream (``coe.batch.multiplex``):
the client the graph calls, and what it and the multiplexer share about one call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coe.batch.calls import Call, Outcome
from coe.experts.base import ExpertClient
from coe.types import Chunk, ExpertRequest, Usage

if TYPE_CHECKING:
    from coe.batch.multiplex import Multiplexer


@dataclass(slots=True)
class Waiter:
    """One online call on its expert's stream, and the request waiting for it."""

    call: Call
    enqueued: float = field(default_factory=time.monotonic)
    #: None: the model is loaded and this request runs the call now; an Outcome: a worker answered
    turn: asyncio.Future[Outcome | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: what the request's own run produced (the slot that handed the call over waits for it)
    done: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def finish(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)


@dataclass(slots=True)
class Waits:
    calls: int = 0
    max_s: float = 0.0
    total_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.calls += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


class MultiplexedExpert(ExpertClient):
    """An expert reached through its stream: the call waits for its model, then streams."""

    def __init__(self, name: str, multiplexer: Multiplexer) -> None:
        self.name = name
        self.multiplexer = multiplexer

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        mux = self.multiplexer
        waiter = await mux.enqueue(self.name, request)
        parts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        try:
            answered = await waiter.turn
            if answered is not None:  # a worker elsewhere ran it
                completion = answered.completion(self.name)
                yield Chunk(completion.content, completion.usage, completion.finish_reason)
                return
            async with aclosing(mux.pool.server_client(self.name).stream(request)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk.text)
                    usage = chunk.usage or usage
                    finish = chunk.finish_reason or finish
                    yield chunk
            waiter.finish(
                Outcome(content="".join(parts), usage=usage or Usage(), finish_reason=finish or "stop")
            )
        except BaseException as err:
            waiter.finish(Outcome(error=str(err) or type(err).__name__))
            raise
        finally:
            mux.forget(waiter)
