"""The errors of two-phase commit, each naming the transaction and what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seawall.errors import SeawallError

if TYPE_CHECKING:
    from seawall.workflows.two_phase._model import TwoPhaseResult

__all__ = [
    "CommitProtocolError",
    "HeuristicOutcomeError",
    "KeyLockedError",
    "TransactionAbortedError",
]


class CommitProtocolError(SeawallError):
    """Root of the two- and three-phase commit errors; ``txid`` names the transaction."""

    def __init__(self, message: str, *, txid: str) -> None:
        super().__init__(message)
        self.txid = txid


class TransactionAbortedError(CommitProtocolError):
    """The transaction aborted: a participant voted no or failed to prepare.

    ``participant`` is the first one that refused and ``reason`` why; when its work
    raised in this process, that exception is the ``__cause__``. Nothing was committed
    anywhere.
    """

    def __init__(
        self,
        txid: str,
        participant: str | None,
        reason: str,
        result: TwoPhaseResult | None = None,
    ) -> None:
        who = f" at participant {participant!r}" if participant else ""
        super().__init__(
            f"transaction {txid!r} aborted{who}: {reason}; nothing was committed, so it is safe "
            "to retry with a new key",
            txid=txid,
        )
        self.participant = participant
        self.reason = reason
        self.result = result
        """The votes and decision (``None`` when raised outside a coordinator)."""


class HeuristicOutcomeError(CommitProtocolError):
    """A participant settled a prepared transaction against the decision (by hand, or lost it).

    Someone ran ``COMMIT PREPARED``/``ROLLBACK PREPARED`` outside the coordinator, or the
    participant's prepared state was deleted: the participants now disagree and a person
    has to reconcile them.
    """

    def __init__(self, txid: str, participant: str, expected: str, found: str) -> None:
        super().__init__(
            f"participant {participant!r} should {expected} transaction {txid!r} but found it "
            f"{found}: it was settled outside the coordinator; reconcile the participants by hand",
            txid=txid,
        )
        self.participant = participant
        self.expected = expected
        self.found = found


class KeyLockedError(CommitProtocolError):
    """A write touched a key that a prepared (in-doubt) transaction holds; retry once it settles."""

    def __init__(self, key: str, txid: str, participant: str) -> None:
        super().__init__(
            f"key {key!r} of participant {participant!r} is locked by prepared transaction "
            f"{txid!r}; retry after it commits or aborts (run the coordinator's recover() if "
            "its coordinator died)",
            txid=txid,
        )
        self.key = key
        self.participant = participant
