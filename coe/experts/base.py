"""The expert client interface: one required method, ``stream``; ``complete`` is built on it.

Behaviour such as timeouts, retries and bounded concurrency wraps a client
(see ``coe.experts.wrappers``) instead of being switched on by flags.

Whoever iterates a stream closes it (``contextlib.aclosing``): closing a stream early (a client
went away, a deadline passed) closes the upstream request, so the model server stops generating.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from coe.errors import ExpertError
from coe.types import Chunk, Completion, ExpertRequest, Usage

#: receives each piece of text as it streams
Emit = Callable[[str], object]


class ExpertClient(abc.ABC):
    """Answers one request. Subclasses set ``name`` and implement ``stream``."""

    name: str

    @abc.abstractmethod
    def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        """Yield the answer as it is generated; the last chunk carries usage and finish reason.

        Raise ``ExpertError`` on failure (before or during the stream); never an empty stand-in.
        """

    async def complete(self, request: ExpertRequest, emit: Emit | None = None) -> Completion:
        """The whole answer; ``emit`` (if given) sees each piece of text as it arrives."""
        return await collect(self.name, self.stream(request), emit)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the client."""


async def collect(name: str, chunks: AsyncGenerator[Chunk, None], emit: Emit | None = None) -> Completion:
    """Join a stream into one ``Completion`` (closing the stream whatever happens)."""
    parts: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    # Whitespace at either end is never emitted, so the emitted text adds up to the answer exactly;
    # whitespace inside it is held back until the next visible text.
    held: str | None = None  # None until the first visible text
    async with aclosing(chunks) as stream:
        async for chunk in stream:
            if chunk.text:
                parts.append(chunk.text)
                if emit is not None:
                    text = chunk.text.lstrip() if held is None else held + chunk.text
                    body = text.rstrip()
                    if body:
                        emit(body)
                        held = text[len(body) :]
                    elif held is not None:
                        held = text
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
    content = "".join(parts).strip()
    if not content:
        raise ExpertError(name, "returned an empty answer")
    return Completion(content, usage or Usage(), finish or "stop")


class WrapperExpert(ExpertClient):
    """A client that delegates to another; wrappers override ``stream``."""

    def __init__(self, inner: ExpertClient) -> None:
        self.inner = inner
        self.name = inner.name

    def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        return self.inner.stream(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
