"""The errors the transactional outbox raises.

::

    SeawallError
    └── OutboxError
        └── RelayAlreadyRunningError      run()/start() on a relay that is running

Bodies that cannot be encoded raise :class:`seawall.codec.EncodeError` at ``add``
(nothing is written); invalid arguments raise
:class:`seawall.errors.ConfigurationError`. A message that cannot be published is
never raised to the writer: the relay retries it with backoff (see the docs).
"""

from __future__ import annotations

from seawall.errors import SeawallError

__all__ = ["OutboxError", "RelayAlreadyRunningError"]


class OutboxError(SeawallError):
    """The outbox or its relay refused an operation."""


class RelayAlreadyRunningError(OutboxError):
    """A relay object runs one loop at a time; start another relay object instead."""

    def __init__(self, relay: str) -> None:
        super().__init__(
            f"outbox relay {relay!r} is already running; stop it first, or build a second "
            "OutboxRelay (several relays share the work safely)"
        )
        self.relay = relay
