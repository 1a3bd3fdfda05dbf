"""Run one llama.cpp server (xllamacpp) in this process until SIGTERM/SIGINT.

    python -m coe.experts._llama_server --model PATH --port N [--ctx N] [--parallel N] [--threads N]

Started by ``coe.experts.launch.LlamaCppServer``; prints ``READY <url>`` once listening.
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
    if args.alias:
        params.model_alias = {args.alias}
    parent = os.getppid()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = xllamacpp.Server(params)
    print(f"READY {server.listening_address}", flush=True)
    # Stop on a signal, or when the process that started us is gone (it was killed).
    while signal.sigtimedwait(stop_signals, 1.0) is None:
        if os.getppid() != parent:
            break
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
