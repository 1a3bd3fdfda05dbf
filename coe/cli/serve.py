"""``coe serve``: run the API until SIGTERM/SIGINT, then stop every server coe started."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default from config: 8000)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from coe.api.app import create_app
    from coe.config import Settings
    from coe.service import Service

    settings = Settings.load(args.config, host=args.host, port=args.port)
    service = Service(settings)  # reads the experts file: bad input exits 2 before anything starts
    app = create_app(settings, lambda _: service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    with _no_signal_replay():
        try:
            server.run()
        except SystemExit:  # uvicorn's exit when the lifespan (Service.start) failed
            error = getattr(app.state, "startup_error", None)
            if error is not None:
                raise error from None
            raise
    return 0 if server.started else 1


@contextlib.contextmanager
def _no_signal_replay() -> Iterator[None]:
    """After a graceful shutdown uvicorn re-raises the SIGTERM/SIGINT it caught under the handlers
    it found, so the process would die of the signal; with these no-op handlers it exits 0."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
