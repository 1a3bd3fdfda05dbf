"""Learning routers from benchmark results: profiles (``coe profile``), training and
cross-validation (``coe train``). The routers themselves live in ``routers/`` and only read what
this package writes."""

from __future__ import annotations

import shlex
import sys


def command_line() -> str:
    """The ``coe ...`` command this process runs (recorded beside what it builds), or ``""``."""
    if not sys.argv or not sys.argv[0].endswith(("coe", "__main__.py")):
        return ""
    return shlex.join(["coe", *sys.argv[1:]])
