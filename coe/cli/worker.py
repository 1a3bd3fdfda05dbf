"""``coe worker``: serve the batch call streams until SIGTERM/SIGINT; adopt orphaned batches.

With ``REDIS_URL`` unset it uses the local batch Redis (STATE_DIR/batch), as ``coe batch`` and
``coe serve`` do. Besides batch calls it takes the online calls ``coe serve`` queued while
multiplexing (``serve_memory_budget_bytes``), for the experts the API does not hold; their answers
reach the waiting requests through Redis.

The first SIGTERM/SIGINT stops the worker gracefully: the calls in flight finish, the model servers
stop. If that takes longer than ``shutdown_grace_s`` plus ``STOP_BOUND_S``, or on a second signal,
the process exits at once; the servers it started go with it (their lifelines end), and calls it
had taken are retaken by other workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("coe.worker")

#: Beyond the calls' grace: stopping the model servers (SIGTERM, SIGKILL 10 s later) and Redis.
STOP_BOUND_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")
    parser.add_argument("--experts", help="comma-separated experts to serve (default: every configured one)")
    parser.add_argument("--no-adopt", action="store_true", help="never drive batches whose driver died")


async def _serve(args: argparse.Namespace) -> None:
    from coe.batch.adopt import Adopter
    from coe.batch.connect import batch_redis
    from coe.batch.worker import Worker
    from coe.config import Settings, load_experts
    from coe.errors import UserError

    settings = Settings.load(args.config)
    configs = load_experts(settings.experts_file)
    every = [c.name for c in configs]  # an adopted batch queues calls for every configured expert
    wanted = [e for e in (args.experts or "").split(",") if e]
    unknown = sorted(set(wanted) - {c.name for c in configs})
    if unknown:
        raise UserError(f"unknown expert(s): {', '.join(unknown)}")
    if wanted:
        configs = [c for c in configs if c.name in wanted]
    async with batch_redis(settings) as (redis, _):
        worker = Worker(redis, settings, configs)
        _on_stop_signals(worker.stop, settings.shutdown_grace_s + STOP_BOUND_S)
        adopter = None
        if not args.no_adopt:
            adopter = asyncio.create_task(Adopter(redis, settings, every).run())
        try:
            await worker.run()
        finally:
            if adopter is not None:
                adopter.cancel()
                await asyncio.gather(adopter, return_exceptions=True)


def run(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0


def _on_stop_signals(stop: Callable[[], None], bound_s: float) -> None:
    """SIGTERM/SIGINT call ``stop``; the process exits at once ``bound_s`` later, or on a second one."""
    loop = asyncio.get_running_loop()

    def hard_exit(reason: str) -> None:
        log.error("%s: exiting now", reason)
        logging.shutdown()
        os._exit(1)

    def on_signal(sig: signal.Signals) -> None:
        if received:
            hard_exit(f"{sig.name} again while stopping")
        received.append(sig)
        log.info("%s: stopping (at most %.0fs)", sig.name, bound_s)
        loop.call_later(bound_s, hard_exit, f"not stopped {bound_s:.0f}s after {sig.name}")
        stop()

    received: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
