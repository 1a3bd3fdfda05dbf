"""The lifeline: what keeps a process coe starts from outliving coe. Standard library only.

    python -I -S _lifeline.py FD GRACE_S -- ARGV...   start ARGV on a lifeline (see ``coe.experts.child``)
    python -I -S _lifeline.py --watch FD GRACE_S      the watchdog that start leaves behind

coe runs this as the leader of a new process group and keeps the write end of a pipe whose read
end is FD. It forks a watchdog into the same group, then replaces itself with ARGV (same pid). The
watchdog waits for FD to read end-of-file, which happens when coe closes the pipe (it stops the
server) or when coe's process ends, however it ends: the kernel closes a dead process's files even
after SIGKILL, before or after the server finished loading, with no race. Then it stops the whole
group: SIGTERM, and SIGKILL for whatever is still there GRACE_S seconds later.

The watchdog ignores SIGTERM, SIGINT and SIGHUP, so a group-wide SIGTERM leaves it to finish the
job. When the server exits on its own, the watchdog stops what it left in the group (vLLM's engine
processes, say) the same way, and stays until the lifeline ends: while it lives the group's id
cannot be reused, so coe may still signal the group.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time


def _others() -> list[int]:
    """Live processes of this process group other than this one (zombies are already dead)."""
    me, group = os.getpid(), os.getpgrp()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z" and int(fields[2]) == group:
            found.append(int(entry))
    return found


def _stop_group(grace_s: float) -> None:
    """SIGTERM the group, then SIGKILL it (this process included) if anyone outlives ``grace_s``."""
    if not _others():
        return
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _others():
        if time.monotonic() >= deadline:
            print(f"lifeline: SIGKILL to process group {os.getpgrp()}", file=sys.stderr, flush=True)
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.05)


def watch(fd: int, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    server = os.getppid()
    lifeline = select.poll()
    lifeline.register(fd, select.POLLIN | select.POLLHUP)
    server_gone = False
    while not lifeline.poll(500):
        if not server_gone and os.getppid() != server:
            server_gone = True
            _stop_group(grace_s)
    _stop_group(grace_s)


def start(fd: int, grace_s: str, argv: list[str]) -> None:
    if os.fork() == 0:
        try:
            watchdog = [sys.executable, "-I", "-S", __file__, "--watch", str(fd), grace_s]
            os.execv(sys.executable, watchdog)  # noqa: S606 (a fixed argv, no shell)
        finally:
            os._exit(127)
    os.close(fd)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 (the argv coe built, no shell)
    except OSError as err:
        print(f"lifeline: cannot run {argv[0]}: {err}", file=sys.stderr, flush=True)
        os._exit(127)


def main(args: list[str]) -> None:
    if len(args) == 3 and args[0] == "--watch":
        watch(int(args[1]), float(args[2]))
    elif len(args) > 3 and args[2] == "--":
        start(int(args[0]), args[1], args[3:])
    else:
        sys.exit(f"usage: {__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
