"""The expert client interface: one required method, ``complete``.

Behaviour such as timeouts, retries and bounded concurrency wraps a client
(see ``coe.experts.wrappers``) instead of being switched on by flags.
"""

from __future__ import annotations

import abc

from coe.types import Completion, ExpertRequest


class ExpertClient(abc.ABC):
    """Answers one request. Subclasses set ``name`` and implement ``complete``."""

    name: str

    @abc.abstractmethod
    async def complete(self, request: ExpertRequest) -> Completion:
        """Return the expert's answer or raise ``ExpertError``; never an empty stand-in."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the client."""


class WrapperExpert(ExpertClient):
    """A client that delegates to another; wrappers override ``complete``."""

    def __init__(self, inner: ExpertClient) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(self, request: ExpertRequest) -> Completion:
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
