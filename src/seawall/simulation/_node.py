"""Simulated nodes: a disk whose committed records survive a crash, and the life of a process.

A node's state is in two places. Its :class:`Storage` is the disk: only what a
:class:`RecordsTransaction` committed is there, and it survives a crash. Everything
else (attributes of the node object, its timers) is memory: a crash loses it, and a
restart rebuilds it from the disk in :meth:`Node.boot`, as a real service would.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seawall.simulation._kernel import Timer
from seawall.simulation._network import Message

if TYPE_CHECKING:
    from seawall.simulation._world import World

__all__ = ["Node", "RecordsTransaction", "Storage"]

_DELETED: Any = object()
_IMMUTABLE = (str, int, float, bool, type(None))


def _copy(value: Any) -> Any:
    """A deep copy of plain data (what records hold: dicts, lists, str, numbers, None)."""
    if isinstance(value, _IMMUTABLE):
        return value
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:
        raise TypeError(
            f"records hold plain data (dict, list, str, int, float, bool, None), not {value!r}"
        ) from None


class Storage:
    """A node's disk: records that a committed transaction wrote."""

    __slots__ = ("commits", "committed")

    def __init__(self) -> None:
        self.committed: dict[str, Any] = {}
        self.commits = 0

    def begin(self) -> RecordsTransaction:
        """A transaction over the committed records (nothing is visible to others until commit)."""
        return RecordsTransaction(self)

    def get(self, key: str) -> Any | None:
        """A copy of the committed value at ``key`` (for reading outside a transaction)."""
        value = self.committed.get(key)
        return None if value is None else _copy(value)

    def keys(self, prefix: str = "") -> list[str]:
        """Committed keys starting with ``prefix``, sorted."""
        return sorted(key for key in self.committed if key.startswith(prefix))

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every committed record, keys sorted."""
        return {key: _copy(self.committed[key]) for key in sorted(self.committed)}


class RecordsTransaction:
    """Reads and writes over a :class:`Storage`, applied all at once by :meth:`commit`.

    Implements the shop's ``Records`` protocol (``get``, ``put``, ``delete``, ``keys``).
    Values are copied in and out, so a handler can never change stored state by
    mutating an object it read: only ``put`` writes.
    """

    __slots__ = ("_storage", "_writes", "done")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._writes: dict[str, Any] = {}
        self.done = False

    def get(self, key: str) -> Any | None:
        """The value at ``key`` as this transaction sees it, or ``None``."""
        value = self._writes.get(key, None)
        if value is None:
            if key in self._writes:
                return None
            value = self._storage.committed.get(key)
        if value is None or value is _DELETED:
            return None
        return _copy(value)

    def put(self, key: str, value: Any) -> None:
        """Write ``value`` at ``key`` (visible to this transaction now, to others on commit)."""
        self._writes[key] = _copy(value)

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        self._writes[key] = _DELETED

    def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` as this transaction sees them, sorted."""
        found = {key for key in self._storage.committed if key.startswith(prefix)}
        for key, value in self._writes.items():
            if key.startswith(prefix):
                if value is _DELETED:
                    found.discard(key)
                else:
                    found.add(key)
        return sorted(found)

    def commit(self) -> None:
        """Make every write durable at once."""
        if self.done:
            return
        self.done = True
        committed = self._storage.committed
        for key, value in self._writes.items():
            if value is _DELETED:
                committed.pop(key, None)
            else:
                committed[key] = value
        self._storage.commits += 1
        self._writes = {}

    def rollback(self) -> None:
        """Forget every write."""
        self.done = True
        self._writes = {}


class Node:
    """A simulated process: receives messages, sets timers, crashes and restarts.

    Subclasses handle messages in :meth:`on_message` and rebuild their memory from
    :attr:`storage` in :meth:`boot` (called at start and after every restart).
    """

    def __init__(self, name: str, world: World) -> None:
        self._name = name
        self.world = world
        self.storage = Storage()
        self.incarnation = 0
        """Bumped by each crash: timers of an older incarnation never fire."""
        self._up = True

    @property
    def name(self) -> str:
        """The node's address on the network."""
        return self._name

    @property
    def up(self) -> bool:
        """False between a crash and the restart."""
        return self._up

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """Boot for the first time."""
        self.boot()

    def crash(self, why: str = "") -> None:
        """Stop at once: memory and timers are lost, committed records stay."""
        if not self._up:
            return
        self._up = False
        self.incarnation += 1
        self.world.trace.record("crash", f"{self._name}{' ' + why if why else ''}")
        self.forget()

    def restart(self) -> None:
        """Come back: rebuild memory from the committed records."""
        if self._up:
            return
        self._up = True
        self.world.trace.record("restart", self._name)
        self.boot()

    def boot(self) -> None:
        """Rebuild memory from :attr:`storage` and resume pending work (override)."""

    def forget(self) -> None:
        """Drop everything held in memory (override; called on crash)."""

    # ------------------------------------------------------------- messages

    def receive(self, message: Message) -> None:
        """Called by the network for each delivered message."""
        if self._up:
            self.on_message(message)

    def on_message(self, message: Message) -> None:
        """Handle one delivered message (override)."""

    def send(self, target: str, kind: str, body: Any) -> int:
        """Send a message through the simulated network."""
        return self.world.network.send(self._name, target, kind, body)

    def timer(self, delay: float, callback: Callable[[], None], label: str = "") -> Timer:
        """Run ``callback`` after ``delay`` simulated seconds, unless this node crashes first."""
        return self.world.scheduler.after(
            delay, callback, label=f"{self._name}:{label}", owner=self
        )

    def decide(self, detail: str) -> None:
        """Record one of this node's decisions in the trace."""
        self.world.trace.record("decide", f"{self._name} {detail}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, up={self._up!r})"
