"""The WHERE clause of a SQLite ``list()`` over saga or flow records: status and name filters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["sqlite_filters"]


def sqlite_filters(
    statuses: Iterable[str] | None, column: str, value: str | None
) -> tuple[str, list[Any]] | None:
    """``(where, parameters)`` keeping ``statuses`` (None: any) and ``column = value`` (None: any).

    None when ``statuses`` is given but empty: nothing can match, so skip the query.
    """
    filters: list[str] = []
    parameters: list[Any] = []
    if statuses is not None:
        wanted = list(statuses)
        if not wanted:
            return None
        filters.append(f"status IN ({', '.join('?' * len(wanted))})")
        parameters.extend(wanted)
    if value is not None:
        filters.append(f"{column} = ?")
        parameters.append(value)
    return (f"WHERE {' AND '.join(filters)}" if filters else ""), parameters
