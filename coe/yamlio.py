"""YAML files validated into pydantic models, with errors that point at the line.

``load_model(path, Model)`` parses YAML (rejecting duplicate keys), validates it with ``Model``
(``extra="forbid"``) and raises ``ConfigError`` whose lines read ``FILE:LINE:COL: field.path: msg``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from coe.errors import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)
Loc = tuple[str | int, ...]
Positions = dict[Loc, tuple[int, int]]


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _positions(node: yaml.Node, loc: Loc, out: Positions) -> None:
    out[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _positions(value_node, (*loc, key), out)
            out[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, (*loc, index), out)


def parse(text: str, source: str) -> tuple[Any, Positions]:
    """Parse YAML text; returns the data and a map from field path to (line, column)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = err.problem or err.context or "invalid YAML"
        started = err.context_mark
        if err.context and started is not None and started.line + 1 != line:
            problem += f" ({err.context} at line {started.line + 1}, column {started.column + 1})"
        raise ConfigError(f"{source}:{line}:{col}: yaml: {problem}") from None
    positions: Positions = {}
    if node is not None:
        _positions(node, (), positions)
    return data, positions


def locate(positions: Positions, loc: Iterable[str | int]) -> tuple[int, int]:
    """The position of the deepest part of ``loc`` that exists in the file."""
    path = tuple(loc)
    while path and path not in positions:
        path = path[:-1]
    return positions.get(path, (1, 1))


def format_loc(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def problems_from(err: pydantic.ValidationError, source: str, positions: Positions) -> list[str]:
    lines = []
    for item in err.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line, col = locate(positions, loc)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}:{line}:{col}: {format_loc(loc)}: {message}")
    return lines


def validate(data: Any, model: type[M], source: str, positions: Positions, context: Any = None) -> M:
    try:
        return model.model_validate(data if data is not None else {}, context=context)
    except pydantic.ValidationError as err:
        raise ConfigError(problems_from(err, source, positions)) from None


def load_model(path: Path, model: type[M], context: Any = None) -> M:
    """Read, parse and validate one YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}:1:1: (file): cannot read: {err.strerror}") from None
    data, positions = parse(text, str(path))
    return validate(data, model, str(path), positions, context)
