"""The in-memory engine: process-local state, nothing to install; also the test double."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from seawall.engines._base import Engine

__all__ = ["MemoryEngine"]


class MemoryEngine(Engine):
    """State lives in this process. ``memory://name`` engines with the same name share it."""

    kind: ClassVar[str] = "memory"
    _shared: ClassVar[dict[str, dict[str, Any]]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        name = url.split("://", 1)[1]
        if name:
            with self._shared_lock:
                self.namespaces = self._shared.setdefault(name, {})
        else:
            self.namespaces = {}
        self.lock = threading.Lock()

    def namespace(self, name: str, factory: type[Any] = dict) -> Any:
        """The engine's shared object called ``name``, created with ``factory()`` on first use."""
        with self.lock:
            try:
                return self.namespaces[name]
            except KeyError:
                value = self.namespaces[name] = factory()
                return value
