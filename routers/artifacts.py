"""Trained router artifacts: a JSON file (what was learned, small tables) beside an optional
``.npz`` of arrays with the same stem, and a ``.command`` sidecar holding the command that
rebuilt them. ``coe train`` writes them; routers read them when a graph is built.

Every artifact's JSON has ``kind`` (which trainer made it: ``category``, ``correctness``,
``skills``), ``experts`` (whom it knows) and ``embedding`` (the embedder settings it was trained
with, which the router must reuse).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coe.errors import ConfigError, UserError

__all__ = ["Artifact", "read_artifact", "resolve", "write_artifact"]


@dataclass(frozen=True, slots=True)
class Artifact:
    path: Path
    meta: dict[str, Any]
    arrays: dict[str, NDArray[Any]]

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", ""))

    @property
    def experts(self) -> list[str]:
        return [str(e) for e in self.meta.get("experts", [])]

    def array(self, name: str) -> NDArray[np.float32]:
        if name not in self.arrays:
            raise ConfigError(f"{self.path}:1:1: arrays: missing {name!r}")
        return np.asarray(self.arrays[name], dtype=np.float32)


def resolve(path: str | Path, base_dir: Path) -> Path:
    """Artifact paths in a graph are relative to the graph file's folder."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate).resolve()


def read_artifact(path: Path) -> Artifact:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read router artifact {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: (artifact): not JSON: {err.msg}") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ConfigError(f"{path}:1:1: kind: a router artifact needs a kind")
    arrays: dict[str, NDArray[Any]] = {}
    if meta.get("arrays"):
        npz = path.parent / str(meta["arrays"])
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except OSError as err:
            raise UserError(f"cannot read router arrays {npz}: {err}") from None
    return Artifact(path, meta, arrays)


def write_artifact(
    path: Path, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]], command: str
) -> list[Path]:
    """Write the JSON, its arrays (compressed .npz) and the command sidecar; return the paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(meta)
    written = [path]
    if arrays:
        npz = path.with_suffix(".npz")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
        npz.write_bytes(buffer.getvalue())
        data["arrays"] = npz.name
        written.append(npz)
    data["command"] = command
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sidecar = path.with_suffix(".command")
    sidecar.write_text(
        "# rebuilds "
        + ", ".join(p.name for p in written)
        + " (run from the repository root)\n"
        + command
        + "\n",
        encoding="utf-8",
    )
    return [*written, sidecar]
