"""``coe worker``: serve the batch call streams until SIGTERM/SIGINT; adopt orphaned batches.

With ``REDIS_URL`` unset it uses the local batch Redis (STATE_DIR/batch), as ``coe batch`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path


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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
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
