"""Run one llama.cpp server (xllamacpp) in this process until SIGTERM/SIGINT.

    python -m coe.experts._llama_server --model PATH --port N [--ctx N] [--parallel N] [--threads N]

Started by ``coe.experts.launch.LlamaCppServer``; prints ``READY <url>`` once listening. A stop
signal that arrives while the model loads is handled once it has loaded. On a stop signal the
process exits at once, without running the server's destructor: xllamacpp's ``~Server`` often
waits forever for its main loop ("waiting for main loop exit"), and there is nothing to save.
The server does not watch for coe's death itself: its lifeline does (``coe.experts.child``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coe-llama-server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx", type=int, default=4096, help="context tokens per slot")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--poll", type=int, default=0, help="llama.cpp's busy-wait level (0-100) for work between steps"
    )
    parser.add_argument("--alias", default="")
    args = parser.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx * args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # llama.cpp's threads spin (poll 50) between steps by default: with several servers on a few
    # cores, the idle ones' spinning takes the cores from the one that has work.
    params.cpuparams.poll = params.cpuparams_batch.poll = args.poll
    if args.alias:
        params.model_alias = {args.alias}
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked here, so also in every thread the server starts: only the wait below takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = xllamacpp.Server(params)
    print(f"READY {server.listening_address}", flush=True)
    received = signal.sigwait(stop_signals)
    print(f"stopped by {signal.Signals(received).name}", flush=True)
    os._exit(0)  # see the module docstring: not ``del server``


if __name__ == "__main__":
    sys.exit(main())
