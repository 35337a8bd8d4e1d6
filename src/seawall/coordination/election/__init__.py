"""Leader election with fencing terms, over any expiring lock store.

::

    from seawall.coordination import Election, sql_fence

    election = Election("billing", ttl=10.0, store="postgresql://app@db/shop",
                        on_demoted=lambda term, reason: stop_leader_work())
    term = election.campaign()                  # waits until this candidate leads
    while term.held:                            # False from the term's deadline on
        with db.transaction() as tx:
            sql_fence(tx, "billing", term.number)   # a former leader's write is refused
            tx.execute("UPDATE ...")
    election.resign()

Engines: every lock store whose leases expire by TTL (memory, SQLite, PostgreSQL,
Redis, Redlock, etcd). See ``docs/coordination/election.md``.
"""

from __future__ import annotations

from seawall.coordination.election._core import DEFAULT_DRIFT_MARGIN, Term
from seawall.coordination.election._election import Election, LeaderInfo
from seawall.coordination.election._errors import (
    ElectionError,
    ElectionTimeoutError,
    LeadershipLostError,
)
from seawall.coordination.election._events import (
    LeaderDemoted,
    LeaderElected,
    LeadershipRenewalFailed,
    LeadershipRenewed,
)

__all__ = [
    "DEFAULT_DRIFT_MARGIN",
    "Election",
    "ElectionError",
    "ElectionTimeoutError",
    "LeaderDemoted",
    "LeaderElected",
    "LeaderInfo",
    "LeadershipLostError",
    "LeadershipRenewalFailed",
    "LeadershipRenewed",
    "Term",
]
