"""The errors leader election raises, each carrying the data a caller needs.

::

    SeawallError
    └── ElectionError                      an election refused an operation (base)
        ├── LeadershipLostError            the term ended: lease ran out, was taken, or resigned
        └── ElectionTimeoutError           campaign waited ``wait`` seconds (also RejectedError)

Invalid arguments raise :class:`seawall.errors.ConfigurationError`; an unreachable
engine raises :class:`seawall.errors.EngineUnavailableError` once the wait is spent.
"""

from __future__ import annotations

from seawall.errors import RejectedError, SeawallError

__all__ = ["ElectionError", "ElectionTimeoutError", "LeadershipLostError"]


class ElectionError(SeawallError):
    """A leader election refused an operation; ``group`` names the election."""

    group: str


class LeadershipLostError(ElectionError):
    """This candidate no longer leads: its term ended (lease ran out, taken, or resigned).

    Work started in ``term`` may overlap the next leader's; a resource fenced with the
    term number (:func:`~seawall.coordination.sql_fence`) refuses the stale writes.
    """

    def __init__(self, group: str, term: int, reason: str) -> None:
        super().__init__(
            f"leadership of {group!r} (term {term}) ended: {reason}; stop the leader's work, "
            "fence its writes with the term number so a former leader cannot corrupt data, "
            "and campaign again to lead"
        )
        self.group = group
        self.term = term
        self.reason = reason


class ElectionTimeoutError(ElectionError, RejectedError):
    """``campaign`` waited ``wait`` seconds and another candidate still led.

    ``retry_after`` is the leader's remaining lease (engine clock) when the engine
    reported it, else ``None``.
    """

    def __init__(self, group: str, wait: float, *, retry_after: float | None = None) -> None:
        hint = (
            f"; the leader's lease ends in {retry_after:.3f}s unless it renews"
            if retry_after is not None
            else ""
        )
        super().__init__(
            f"election {group!r} has another leader and campaign gave up after waiting "
            f"{wait:.3f}s{hint}; campaign with a longer wait (math.inf waits until elected)",
            retry_after=retry_after,
        )
        self.group = group
        self.wait = wait
