"""A name → class registry with a decorator at the definition (DESIGN rule 9)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from interplab.core.errors import InterplabError, choices

T = TypeVar("T")


class Registry(Generic[T]):
    """Registered entries by name; registering a name twice raises."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise InterplabError(
                    f"A {self.what} named {name!r} is already registered "
                    f"({self._entries[name]!r}); pick another name."
                )
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise InterplabError(
                f"No {self.what} named {name!r}. Registered: {choices(sorted(self._entries))}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
