"""Import layering: benchmark knowledge lives in ``coe.questions``; runtime packages never import
evaluation, and batching never imports it either (``coe.eval`` builds on ``coe.batch``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: package folder -> module prefixes it must not import
FORBIDDEN = {
    "coe/experts": ("coe.eval",),
    "coe/aggregators": ("coe.eval",),
    "coe/graph": ("coe.eval",),
    "coe/api": ("coe.eval",),
    "coe/batch": ("coe.eval",),
    "routers": ("coe.eval",),
    "coe/questions": ("coe.eval", "coe.experts", "coe.graph", "coe.batch", "routers"),
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_layers(package: str) -> None:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in imported_modules(path):
            if module.startswith(FORBIDDEN[package]):
                bad.append(f"{path.relative_to(REPO)} imports {module}")
    assert not bad, "\n".join(bad)
