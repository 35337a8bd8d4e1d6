"""The errors a claim check raises.

::

    SeawallError
    └── ClaimCheckError
        └── BlobNotFoundError (also KeyError)    the blob a reference names is not in the store
"""

from __future__ import annotations

from seawall.errors import SeawallError

__all__ = ["BlobNotFoundError", "ClaimCheckError"]


class ClaimCheckError(SeawallError):
    """A claim check could not store, find or delete a payload."""


class BlobNotFoundError(ClaimCheckError, KeyError):
    """The blob ``key`` is not in the store: deleted already, collected, or never written.

    A queue that meets one while receiving moves the message to the dead letters
    with this reason instead of handing it out.
    """

    def __init__(self, key: str, where: str) -> None:
        super().__init__(
            f"claim check blob {key!r} is missing from {where}; it was deleted after an earlier "
            "ack, removed by collect_garbage, or the producer uses another blob store: give "
            "producers and consumers the same store and a collect_garbage age above the "
            "longest time a message waits"
        )
        self.key = key
        self.where = where

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])
