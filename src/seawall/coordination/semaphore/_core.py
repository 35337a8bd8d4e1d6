"""Sans-I/O semaphore decisions: who gets a holding, which slot, and the wait hint.

The memory and SQLite stores call :func:`choose` with the live holdings and intents of
one name (already pruned of expired ones) under their own mutual exclusion; the
PostgreSQL function and the Redis script implement the same rule in the engine's
language, and the conformance suite holds all of them to it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Holding", "choose", "lowest_free_slot"]

Holding = tuple[int, bool, float]
"""(slot, exclusive, expires at) of one live holding."""


def lowest_free_slot(used: set[int]) -> int:
    """The smallest slot number not in ``used``."""
    slot = 0
    while slot in used:
        slot += 1
    return slot


def choose(
    holdings: Mapping[str, Holding],
    intents: Mapping[str, float],
    owner: str,
    limit: int,
    exclusive: bool,
    now: float,
) -> tuple[int, float | None]:
    """``(slot, None)`` when ``owner`` may hold now, else ``(-1, hint)``.

    ``hint`` is how long until a blocking holding ends (``None``: unknown, such as an
    exclusive waiter's intent). An owner that already holds keeps its slot.
    """
    mine = holdings.get(owner)
    if mine is not None:
        return mine[0], None
    if exclusive:
        if holdings:
            return -1, max(0.0, max(expires for _, _, expires in holdings.values()) - now)
        return 0, None
    if len(holdings) >= limit or any(held for _, held, _ in holdings.values()):
        return -1, max(0.0, min(expires for _, _, expires in holdings.values()) - now)
    if any(waiter != owner for waiter in intents):
        return -1, None
    return lowest_free_slot({slot for slot, _, _ in holdings.values()}), None
