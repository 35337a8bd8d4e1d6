"""Hypothesis drives several holders of one lock against a reference model of leases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from seawall.clock import ManualClock
from seawall.coordination import (
    Lease,
    Lock,
    LockError,
    LockLostError,
    LockNotHeldError,
    LockTimeoutError,
    MemoryLockStore,
)
from seawall.coordination.lock._core import DRIFT_FACTOR

TTL = 1.0
CLIENTS = 3


@dataclass
class Holding:
    """The model's view of one client's latest lease."""

    token: int
    expires_at: float
    """When the engine ends it."""
    valid_until: float
    """When the client stops trusting it."""
    released: bool = False
    lost: bool = False


class LockModel(RuleBasedStateMachine):
    """At most one live holder; tokens rise by one per grant; CAS release and extend."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.store = MemoryLockStore(self.clock)
        self.locks = [
            Lock("model", ttl=TTL, store=self.store, clock=self.clock, wait=0)
            for _ in range(CLIENTS)
        ]
        self.leases: list[Lease | None] = [None] * CLIENTS
        self.model: list[Holding | None] = [None] * CLIENTS
        self.holder: int | None = None
        self.counter = 0
        self.issued: list[int] = []

    def _engine_holder(self) -> int | None:
        if self.holder is None:
            return None
        holding = self.model[self.holder]
        assert holding is not None
        if holding.released or self.clock.now() >= holding.expires_at:
            return None
        return self.holder

    @rule(client=st.integers(0, CLIENTS - 1))
    def acquire(self, client: int) -> None:
        now = self.clock.now()
        mine = self.model[client]
        if mine is not None and not mine.released and not mine.lost and now < mine.valid_until:
            with pytest.raises(LockError, match="not reentrant"):
                self.locks[client].acquire()
            return
        if self._engine_holder() is not None:
            with pytest.raises(LockTimeoutError):
                self.locks[client].acquire()
            return
        lease = self.locks[client].acquire()
        self.counter += 1
        assert lease.fencing_token == self.counter
        self.issued.append(lease.fencing_token)
        self.leases[client] = lease
        self.model[client] = Holding(
            lease.fencing_token, now + TTL, now + TTL * (1.0 - DRIFT_FACTOR)
        )
        self.holder = client

    @precondition(lambda self: any(lease is not None for lease in self.leases))
    @rule(client=st.integers(0, CLIENTS - 1))
    def release(self, client: int) -> None:
        mine = self.model[client]
        if mine is None or mine.released:
            with pytest.raises(LockNotHeldError):
                self.locks[client].release()
            return
        mine.released = True
        if self._holds(client, mine):
            self.locks[client].release()
        else:
            with pytest.raises(LockLostError):
                self.locks[client].release()

    @rule(client=st.integers(0, CLIENTS - 1))
    def extend(self, client: int) -> None:
        mine = self.model[client]
        if mine is None or mine.released:
            with pytest.raises(LockNotHeldError):
                self.locks[client].extend()
            return
        if mine.lost:
            with pytest.raises(LockLostError):
                self.locks[client].extend()
            return
        now = self.clock.now()
        if self._holds(client, mine):
            self.locks[client].extend()
            mine.expires_at = now + TTL
            mine.valid_until = now + TTL * (1.0 - DRIFT_FACTOR)
        else:
            with pytest.raises(LockLostError):
                self.locks[client].extend()
            mine.lost = True

    def _holds(self, client: int, mine: Holding) -> bool:
        return self.holder == client and self.clock.now() < mine.expires_at

    @rule(seconds=st.sampled_from([0.125, 0.25, 0.5, 0.875, 1.0, 1.5]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def the_engine_agrees_on_the_holder(self) -> None:
        holder = self._engine_holder()
        info = self.store.inspect("model")
        if holder is None:
            assert info is None
        else:
            lease = self.leases[holder]
            assert lease is not None
            assert info is not None
            assert info.owner == lease.owner
            assert info.fencing_token == lease.fencing_token

    @invariant()
    def tokens_strictly_increase(self) -> None:
        assert self.issued == list(range(1, len(self.issued) + 1))


TestLockModel = LockModel.TestCase
TestLockModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
