"""Named registries (datasets, scenarios, strategies, schedules, models) with close-match suggestions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lifelong.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map whose lookups fail with a suggestion instead of a KeyError.

    Each entry may carry a one-line help text (shown by `lifelong list`), given when it is registered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        """Decorator adding `obj` under `name`, with `help` (default: its `description` attribute, else the
        first line of its docstring)."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
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
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


def _describe(obj: object) -> str:
    description = getattr(obj, "description", None)
    if isinstance(description, str):
        return description
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().split("\n", 1)[0]
