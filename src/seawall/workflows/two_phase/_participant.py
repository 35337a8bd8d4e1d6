"""The participant contract: what a resource must do to take part in two-phase commit.

A participant is one resource manager (a PostgreSQL database, a SQLite file, a service
that can hold work provisionally). The coordinator calls ``prepare`` with the work to
do, then exactly one of ``commit`` and ``abort``, possibly several times (after a crash,
a lost reply): both must be idempotent. ``in_doubt`` lists what is prepared and not yet
settled, so a restarted coordinator can finish it; ``status`` tells where one
transaction stands.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from seawall.workflows.two_phase._model import ParticipantState, Vote

__all__ = ["GID_PREFIX", "TwoPhaseParticipant", "global_id"]

GID_PREFIX = "seawall"
"""Prepared-transaction ids start with this, then the participant's name and the txid."""


@runtime_checkable
class TwoPhaseParticipant(Protocol):
    """A resource that can prepare work, then commit or abort it on the coordinator's word."""

    @property
    def name(self) -> str:
        """Unique among a coordinator's participants; recorded in the decision log."""
        ...

    def prepare(self, txid: str, work: Any = None) -> Vote:
        """Do ``work`` provisionally and make it durable; vote.

        ``YES`` promises that ``commit`` will succeed (the work survives a crash and its
        rows stay locked); ``NO`` means nothing is left behind. An exception counts as
        ``NO`` (the coordinator then aborts, which must also clean up a half-prepared
        state).
        """
        ...

    def commit(self, txid: str) -> None:
        """Make the prepared work permanent; a no-op when already committed."""
        ...

    def abort(self, txid: str) -> None:
        """Drop the prepared work; a no-op when unknown or already aborted."""
        ...

    def status(self, txid: str) -> ParticipantState:
        """Where ``txid`` stands here."""
        ...

    def in_doubt(self, prefix: str = "") -> list[str]:
        """The prepared, unsettled transactions whose id starts with ``prefix``."""
        ...


def global_id(participant: str, txid: str) -> str:
    """The prepared-transaction id a participant stores: ``seawall|<participant>|<txid>``."""
    return f"{GID_PREFIX}|{participant}|{txid}"
