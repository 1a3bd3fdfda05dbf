"""Registries by name with lazy import: ``name -> "module:Class"``, imported on first use.

Built-ins register through the same path as anything else, so a component that needs heavy
dependencies (torch, say) costs nothing until a graph names it.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from coe.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, base: Any, entries: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, str] = dict(entries or {})
        self._loaded: dict[str, type[T]] = {}

    def register(self, name: str, target: str) -> None:
        """Register ``"package.module:ClassName"`` under ``name``."""
        self._entries[name] = target
        self._loaded.pop(name, None)

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> type[T]:
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            known = ", ".join(self.names) or "none"
            raise UserError(f"unknown {self.kind} {name!r} (known: {known})")
        module_name, _, attr = self._entries[name].partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{self._entries[name]} is not a {self.base.__name__}")
        self._loaded[name] = cls
        return cls
