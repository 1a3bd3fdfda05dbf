"""``coe.__all__`` names exactly the public API, and each name resolves."""

from __future__ import annotations

import subprocess
import sys

import coe


def test_all_names_resolve() -> None:
    for name in coe.__all__:
        assert getattr(coe, name) is not None, name
    assert len(set(coe.__all__)) == len(coe.__all__)


def test_import_is_cheap() -> None:
    heavy = "('fastapi', 'litellm', 'langgraph', 'torch')"
    probe = f"import sys, coe; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
