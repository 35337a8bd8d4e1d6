"""The errors change data capture raises, each carrying the data a caller needs.

::

    SeawallError
    └── ChangeCaptureError
        ├── LogicalDecodingUnavailableError  (also ConfigurationError) wal_level is not logical
        ├── UnknownTableError                (also ConfigurationError) a table does not exist
        ├── UncapturableTableError           (also ConfigurationError) a table cannot be captured
        ├── SlotMismatchError                (also ConfigurationError) the slot belongs elsewhere
        ├── SlotInUseError                   another session is reading the slot
        └── ChangeDecodingError              a change in the log could not be decoded

Nothing is confirmed when one of these is raised: the changes stay in the slot (or the
change table) and are delivered again on the next poll.
"""

from __future__ import annotations

from collections.abc import Sequence

from seawall.errors import ConfigurationError, SeawallError

__all__ = [
    "ChangeCaptureError",
    "ChangeDecodingError",
    "LogicalDecodingUnavailableError",
    "SlotInUseError",
    "SlotMismatchError",
    "UncapturableTableError",
    "UnknownTableError",
]


class ChangeCaptureError(SeawallError):
    """Root of the change data capture errors."""


class LogicalDecodingUnavailableError(ChangeCaptureError, ConfigurationError):
    """The PostgreSQL server cannot decode its log: ``wal_level`` is not ``logical``."""

    def __init__(self, server: str, wal_level: str) -> None:
        super().__init__(
            f"PostgreSQL at {server} runs with wal_level={wal_level}; change data capture needs "
            "wal_level=logical: run ALTER SYSTEM SET wal_level = logical (or set it in "
            "postgresql.conf) and restart the server; also check max_replication_slots >= 1"
        )
        self.server = server
        self.wal_level = wal_level


class UnknownTableError(ChangeCaptureError, ConfigurationError):
    """Some of the tables to capture do not exist; ``tables`` names them."""

    def __init__(self, tables: Sequence[str], database: str) -> None:
        names = ", ".join(repr(table) for table in tables)
        super().__init__(
            f"cannot capture {names}: no such table in {database}; create the table first, "
            "or check the name (PostgreSQL names are case-sensitive here: 'schema.table', "
            "schema 'public' when left out)"
        )
        self.tables = tuple(tables)
        self.database = database


class UncapturableTableError(ChangeCaptureError, ConfigurationError):
    """A table exists but cannot be captured as asked; ``reason`` says why and what to do."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(f"cannot capture table {table!r}: {reason}")
        self.table = table
        self.reason = reason


class SlotMismatchError(ChangeCaptureError, ConfigurationError):
    """The replication slot exists but with another output plugin or in another database."""

    def __init__(self, slot: str, detail: str) -> None:
        super().__init__(
            f"replication slot {slot!r} already exists but {detail}; choose another slot name, "
            "or drop the old slot (SELECT pg_drop_replication_slot(...)) if nothing needs it"
        )
        self.slot = slot
        self.detail = detail


class SlotInUseError(ChangeCaptureError):
    """Another session is reading the slot right now; only one consumer may use a slot."""

    def __init__(self, slot: str, detail: str) -> None:
        super().__init__(
            f"replication slot {slot!r} is in use by another session ({detail}); run one "
            "capture per slot, or give each consumer its own slot"
        )
        self.slot = slot
        self.detail = detail


class ChangeDecodingError(ChangeCaptureError):
    """A message from the log could not be decoded; ``lsn`` and ``reason`` say which and why.

    Nothing was confirmed: the slot still holds the change. A decoder bug or an
    unsupported plugin option is the likely cause; report it with the message bytes.
    """

    def __init__(self, reason: str, *, lsn: int | None = None, data: bytes | str = b"") -> None:
        where = f" at LSN {format_lsn(lsn)}" if lsn is not None else ""
        shown = data[:120] if data else ""
        super().__init__(
            f"cannot decode a logical replication message{where}: {reason}"
            + (f" (message starts {shown!r})" if shown else "")
        )
        self.reason = reason
        self.lsn = lsn
        self.data = data


def format_lsn(lsn: int) -> str:
    """An LSN in PostgreSQL's ``XXX/XXXXXXXX`` notation."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
