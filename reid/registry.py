"""Name -> constructor registries, one per kind (datasets, models, criteria).

Example::

    MODELS = Registry("model")

    @MODELS.register("resnet50")
    class ResNet50(nn.Module): ...

    MODELS.get("resnet50")      # -> ResNet50
    MODELS.get("resnet5")       # ConfigError: unknown model 'resnet5'; valid names: resnet50
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry:
    """A mapping from names to classes or factories of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds the decorated class or function under ``name``."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj  # type: ignore[assignment]
            return obj

        return add

    def get(self, name: str) -> Callable:
        """The entry registered as ``name``; an unknown name lists the valid ones."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} '{name}'{hint}; valid names: {', '.join(sorted(self._entries))}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
