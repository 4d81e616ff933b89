"""Named registries (datasets, scenarios, strategies, schedules, models) with close-match suggestions.

Registries open to other packages also find entries
- by import path, `package.module:Name` (e.g. `--strategy mypkg.methods:MyStrategy`), and
- through a Python entry-point group (e.g. `lifelong.strategies`), which a package declares in its
  pyproject.toml: `[project.entry-points."lifelong.strategies"] my-method = "mypkg.methods:MyStrategy"`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from lifelong.errors import LifelongError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map whose lookups fail with a suggestion instead of a KeyError.

    Each entry may carry a one-line help text (shown by `lifelong list`), given when it is registered."""

    def __init__(self, kind: str, entry_points: str | None = None,
                 check: Callable[[str, Any], None] | None = None) -> None:
        self.kind = kind
        self.group = entry_points
        self.check = check  # validates an entry found by import path or entry point (one clear line if wrong)
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._plugins_loaded = entry_points is None

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        """Decorator adding `obj` under `name`, with `help` (default: its `description` attribute, else the
        first line of its docstring)."""

        def add(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and not same_definition(old, obj):
                where = getattr(old, "__module__", "?")
                raise LifelongError(f"{self.kind} '{name}' is already registered (by {where}): choose another name")
            self._items[name] = obj
            self._help[name] = help if help is not None else _describe(obj)
            return obj

        return add

    def add(self, name: str, obj: T, help: str | None = None) -> T:
        return self.register(name, help)(obj)

    def help(self, name: str) -> str:
        """The help text of entry `name` ('' if it has none)."""
        self.get(name)
        return self._help[name]

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        if self.group is not None and ":" in name:
            return self.import_path(name)
        self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def import_path(self, spec: str) -> T:
        """The object at `package.module:Name` (registered under that spec, so later lookups are fast)."""
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except ImportError as err:
            raise LifelongError(f"{self.kind} '{spec}': cannot import {module_name} ({err})") from None
        except AttributeError:
            raise LifelongError(f"{self.kind} '{spec}': module {module_name} has no '{attr}'") from None
        if self.check is not None:
            self.check(spec, obj)
        self._items[spec] = obj
        self._help[spec] = _describe(obj)
        return obj

    def load_plugins(self) -> None:
        """Add the entries other packages declare in this registry's entry-point group (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
                if self.check is not None:
                    self.check(ep.name, obj)
            except Exception as err:  # noqa: BLE001 - a broken plugin must not break the library
                print(f"warning: {self.kind} plugin '{ep.name}' ({ep.value}) is ignored: {err}", file=sys.stderr)
                continue
            self._items.setdefault(ep.name, obj)
            self._help.setdefault(ep.name, _describe(obj))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except LifelongError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        self.load_plugins()
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        self.load_plugins()
        return sorted(self._items.items())


def _describe(obj: object) -> str:
    description = getattr(obj, "description", None)
    if isinstance(description, str):
        return description
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().split("\n", 1)[0]


def same_definition(old: object, new: object) -> bool:
    """Whether `new` is `old` defined again (a notebook cell or a module run twice): same module and name. Such a
    redefinition replaces the entry; anything else under a taken name is refused."""
    return (getattr(old, "__module__", None) == getattr(new, "__module__", None)
            and getattr(old, "__qualname__", None) == getattr(new, "__qualname__", None))
