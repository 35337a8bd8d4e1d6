"""Named SQL blocks of the semaphore stores (``sql/<engine>.sql``, ``-- name: x`` headers)."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["statements"]


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
