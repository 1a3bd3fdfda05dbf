"""Resolve an expert's ``model`` field to what its server loads.

``model`` is one of:
- ``package:NAME``: a GGUF shipped inside an installed Python package. The package is located with
  ``importlib.util.find_spec`` without importing it; a package split into parts that exposes
  ``assemble(path)`` is assembled once into the cache dir.
- a filesystem path to a GGUF file (``~`` expanded);
- anything else: a hub id, passed through unchanged (vLLM resolves it).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from coe.errors import ConfigError

PACKAGE_PREFIX = "package:"


def resolve_model(model: str, cache_dir: Path) -> str:
    if model.startswith(PACKAGE_PREFIX):
        return str(_packaged_gguf(model.removeprefix(PACKAGE_PREFIX), cache_dir))
    path = Path(model).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.exists():
            raise ConfigError(f"model file {path} does not exist")
        return str(path.resolve())
    return model


def is_gguf(model: str) -> bool:
    return model.startswith(PACKAGE_PREFIX) or model.endswith(".gguf")


def _packaged_gguf(package: str, cache_dir: Path) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"model package {package!r} is not installed (pip install it)")
    package_dir = Path(spec.origin).parent
    found = sorted(package_dir.glob("*.gguf"))
    if found:
        return found[0]
    module = importlib.import_module(package)
    assemble = getattr(module, "assemble", None)
    name = getattr(module, "MODEL_NAME", None)
    if assemble is None or name is None:
        raise ConfigError(f"model package {package!r} holds no .gguf file")
    target = cache_dir / package / str(name)
    verified = target.with_name(target.name + ".verified")
    if target.exists() and verified.exists():
        return target
    path = Path(assemble(target))
    verified.touch()
    return path
