"""``MotExpert``: a Mixture of Thoughts as an in-process expert client.

The models load on first use (in a thread, so the event loop and ``/healthz`` never wait on
them), or earlier through ``load()``. Each request decodes in a worker thread that hands text to
the event loop through an ``asyncio.Queue``, token by token; closing the stream (a client went
away, a deadline passed) sets an event the thread checks between tokens, so generation stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING

from coe.config import LOCAL_PRICE_PER_B
from coe.errors import CoeError, ExpertError
from coe.experts.base import ExpertClient
from coe.types import Chunk, ExpertRequest, Usage

if TYPE_CHECKING:
    from coe.mot.generate import Generator

log = logging.getLogger("coe.mot")

_DONE = object()


class MotExpert(ExpertClient):
    """Answers with the MoT of the checkpoint at ``config_path``."""

    def __init__(
        self,
        name: str,
        config_path: Path,
        models_cache: Path,
        default_max_tokens: int = 512,
        *,
        interact: bool = True,
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.config_path = config_path
        self.models_cache = models_cache
        self.default_max_tokens = default_max_tokens
        self.interact = interact
        self.threads = threads
        self._generator: Generator | None = None
        self._loading: asyncio.Lock | None = None

    def _build(self) -> Generator:
        import torch

        from coe.mot import checkpoint
        from coe.mot.generate import Generator

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        started = time.monotonic()
        generator = Generator(checkpoint.load(self.config_path, self.models_cache))
        log.info("MoT %s loaded from %s in %.1fs", self.name, self.config_path, time.monotonic() - started)
        return generator

    async def load(self) -> Generator:
        """The loaded MoT (loading it in a thread the first time)."""
        if self._generator is None:
            self._loading = self._loading or asyncio.Lock()
            async with self._loading:
                if self._generator is None:
                    try:
                        self._generator = await asyncio.to_thread(self._build)
                    except CoeError as err:
                        raise ExpertError(self.name, str(err)) from None
        return self._generator

    async def stream(self, request: ExpertRequest) -> AsyncGenerator[Chunk, None]:
        from coe.mot.generate import Finished

        generator = await self.load()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()
        started = time.monotonic()
        seed = request.sampling.get("seed")

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                cancel.set()

        def work() -> None:
            try:
                for item in generator.generate(
                    request.messages,
                    request.max_tokens or self.default_max_tokens,
                    temperature=request.temperature or 0.0,
                    seed=int(seed) if isinstance(seed, int | float) else None,
                    stop=request.stop,
                    interact=self.interact,
                    cancel=cancel,
                ):
                    put(item)
            except Exception as err:  # reported to the caller as the expert's failure
                put(err)
            finally:
                put(_DONE)

        threading.Thread(target=work, name=f"coe-mot-{self.name}", daemon=True).start()
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise ExpertError(self.name, f"generation failed: {item}")
                if isinstance(item, Finished):
                    yield Chunk(
                        usage=self._usage(item, time.monotonic() - started), finish_reason=item.finish_reason
                    )
                    log.info(
                        "MoT %s: primary %s, peers %s, weights %s",
                        self.name,
                        item.primary,
                        item.peers,
                        item.weights,
                    )
                elif isinstance(item, str):
                    yield Chunk(text=item)
        finally:
            cancel.set()

    def _usage(self, finished: object, latency_s: float) -> Usage:
        from coe.mot.generate import Finished

        assert isinstance(finished, Finished) and self._generator is not None
        config = self._generator.model.config
        params_b = sum(config.expert(n).params_b for n in (finished.primary, *finished.peers))
        tokens = finished.prompt_tokens + finished.completion_tokens
        cost = tokens * LOCAL_PRICE_PER_B * params_b / 1e6
        return Usage(finished.prompt_tokens, finished.completion_tokens, cost, latency_s)
