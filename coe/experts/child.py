"""The processes coe starts (model servers, redis-server), none of which may outlive coe.

Every launcher starts its server with ``Child.start``: the server leads a new process group, on a
lifeline (``_lifeline.py``) whose watchdog stops the whole group (SIGTERM, then SIGKILL after a
grace period) as soon as coe's end of a pipe closes. That happens on ``stop`` and, through the
kernel, when coe's process ends in any way (SIGKILL included) at any moment: while the server
starts, loads its model, idles or answers. It depends neither on the server handling SIGTERM, nor
on the thread that started it, nor on the server having started yet; and it reaches the
processes the server starts in its group (vLLM's engine) too.

``stop`` is bounded: SIGTERM to the group, SIGKILL after ``timeout_s``, then it returns within a
few seconds even if the process cannot be reaped (the watchdog finishes the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO

log = logging.getLogger("coe.child")

LIFELINE = Path(__file__).with_name("_lifeline.py")
#: After coe is gone, what the group's processes get between SIGTERM and SIGKILL.
ORPHAN_GRACE_S = 5.0
#: How long ``stop`` waits after SIGKILL before it gives up waiting.
KILL_WAIT_S = 5.0

Output = int | IO[bytes] | None


class Child:
    """One server process on a lifeline; ``pid`` is the server's (the lifeline execs into it)."""

    def __init__(self, proc: asyncio.subprocess.Process, lifeline: int) -> None:
        self._proc = proc
        self._lifeline: int | None = lifeline

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        stdout: Output = asyncio.subprocess.DEVNULL,
        stderr: Output = asyncio.subprocess.DEVNULL,
        grace_s: float = ORPHAN_GRACE_S,
        env: dict[str, str] | None = None,
    ) -> Child:
        read, write = os.pipe()  # neither end is inherited by anything coe starts later
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(LIFELINE), str(read), f"{grace_s:g}", "--", *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(read,),
                start_new_session=True,
                env=env,
            )  # fmt: skip
        except BaseException:
            os.close(write)  # if the process started all the same, its watchdog stops it now
            raise
        finally:
            os.close(read)
        return cls(proc, write)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def running(self) -> bool:
        return self._proc.returncode is None

    async def _wait(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._proc.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's group, SIGKILL it after ``timeout_s``; idempotent."""
        if self._lifeline is None:
            return
        try:
            if self.running:
                self._signal_group(signal.SIGTERM)
                if not await self._wait(timeout_s):
                    log.warning("pid %d ignored SIGTERM for %.0fs; SIGKILL", self.pid, timeout_s)
                    self._signal_group(signal.SIGKILL)
                    if not await self._wait(KILL_WAIT_S):
                        log.error("pid %d survived SIGKILL for %.0fs; leaving it", self.pid, KILL_WAIT_S)
            # Whatever the server left in its group, and the watchdog (alive until its lifeline
            # closes, so the group id still names this group).
            self._signal_group(signal.SIGKILL)
        finally:
            os.close(self._lifeline)
            self._lifeline = None
