"""``coe serve``: run the API until SIGTERM/SIGINT, then stop every server coe started."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (default: the embedded config/coe.yaml)")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default from config: 8000)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from coe.api.app import create_app
    from coe.config import Settings

    settings = Settings.load(args.config, host=args.host, port=args.port)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=10, lifespan="on")
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
