"""``coe serve``: run the API until SIGTERM/SIGINT, then stop every server coe started."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from coe.errors import UserError

if TYPE_CHECKING:
    from coe.config import Settings

log = logging.getLogger("coe.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default from config: 8000)")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or JSON objects (default from config: text)",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve beyond loopback without API keys (default: refused unless COE_API_KEYS is set)",
    )


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def check_exposure(settings: Settings, insecure: bool) -> None:
    """Without API keys, refuse to listen beyond loopback unless told ``--insecure-no-auth``."""
    if settings.api_keys or insecure or settings.host in LOOPBACK:
        return
    raise UserError(
        f"refusing to serve on {settings.host} without API keys: anyone who can reach it could use "
        "the experts. Set COE_API_KEYS (comma separated), bind to 127.0.0.1, or pass --insecure-no-auth"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from coe import logs
    from coe.api.app import create_app
    from coe.config import Settings
    from coe.service import Service

    settings = Settings.load(args.config, host=args.host, port=args.port, log_format=args.log_format)
    check_exposure(settings, args.insecure_no_auth)
    logs.setup(args.verbose, settings.log_format)
    if not settings.api_keys and settings.host not in LOOPBACK:
        log.warning("serving on %s with no API keys (--insecure-no-auth): anyone may call it", settings.host)
    service = Service(settings)  # reads the experts file: bad input exits 2 before anything starts
    app = create_app(settings, lambda _: service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,  # uvicorn's loggers (the access log too) go through coe's format and request id
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
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
