"""Engines: one connection object per storage technology, chosen by URL.

``seawall.connect("memory://")``, ``"sqlite:///shop.db"``, ``"redis://127.0.0.1:6379/0"``,
``"postgresql://user@host/db"``. Each pattern's stores take an engine (or a URL) and
pick their implementation from the engine's ``kind``. Drivers are imported lazily:
a missing extra says which one to install.
"""

from __future__ import annotations

from seawall.engines._base import Engine, Transaction, connect, register_engine

__all__ = ["Engine", "Transaction", "connect", "register_engine"]
