"""Named SQL blocks shipped as package data (``sql/<engine>.sql``, ``-- name: x`` headers)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from seawall.errors import ConfigurationError

__all__ = ["check_table", "statements"]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@cache
def _blocks(engine: str) -> dict[str, str]:
    text = resources.files(__package__).joinpath("sql", f"{engine}.sql").read_text()
    blocks: dict[str, str] = {}
    for block in text.split("-- name: ")[1:]:
        name, _, body = block.partition("\n")
        blocks[name.strip()] = body.strip()
    return blocks


def statements(engine: str, **names: str) -> dict[str, str]:
    """Every statement of ``sql/<engine>.sql`` with ``{placeholders}`` filled from ``names``."""
    filled = {}
    for name, body in _blocks(engine).items():
        for placeholder, value in names.items():
            body = body.replace("{" + placeholder + "}", value)
        filled[name] = body
    return filled


def check_table(table: object, store: str) -> str:
    """``table`` if it is a lowercase SQL identifier, else :class:`ConfigurationError`."""
    if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
        raise ConfigurationError(
            f"{store} table must be 1-63 lowercase letters, digits or underscores, "
            f"starting with a letter or underscore; got {table!r}"
        )
    return table
