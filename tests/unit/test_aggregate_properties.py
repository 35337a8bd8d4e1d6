"""Properties: whatever the commands, save points and snapshot policy, a load equals the state.

A hypothesis state machine drives one aggregate through random commands, saves at
random moments (alone or in batches), reloads it at random moments, and checks
every reload against a plain reference model (a list of the amounts applied).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from seawall.eventsourcing import (
    NO_SNAPSHOTS,
    Aggregate,
    Repository,
    SnapshotEvery,
    applies,
    open_event_store,
)


@dataclass
class Added:
    amount: int


@dataclass
class Cleared:
    pass


class Ledger(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.entries: list[int] = []

    def add(self, amount: int) -> None:
        self.emit(Added(amount))

    def clear(self) -> None:
        if self.entries:
            self.emit(Cleared())

    @applies(Added)
    def _added(self, event: Added) -> None:
        self.entries.append(event.amount)

    @applies(Cleared)
    def _cleared(self, event: Cleared) -> None:
        self.entries = []


class LedgerMachine(RuleBasedStateMachine):
    """One ledger, its repository, and the reference: the saved and unsaved entries."""

    @initialize(every=st.one_of(st.none(), st.integers(1, 5)))
    def start(self, every: int | None) -> None:
        self.store = open_event_store("memory://")
        policy = NO_SNAPSHOTS if every is None else SnapshotEvery(every)
        self.repo = Repository(self.store, Ledger, snapshot_policy=policy)
        self.ledger = self.repo.new("l")
        self.saved: list[int] = []
        self.saved_version = 0
        self.current: list[int] = []
        self.version = 0

    @rule(amount=st.integers(-1000, 1000))
    def add(self, amount: int) -> None:
        self.ledger.add(amount)
        self.current.append(amount)
        self.version += 1

    @rule()
    def clear(self) -> None:
        if self.current:
            self.version += 1
        self.ledger.clear()
        self.current = []

    @rule(batched=st.booleans())
    def save(self, batched: bool) -> None:
        if batched:
            self.repo.save_all([self.ledger])
        else:
            self.repo.save(self.ledger)
        self.saved = list(self.current)
        self.saved_version = self.version

    @rule()
    def reload(self) -> None:
        """Loading drops the unsaved events, exactly as the reference does."""
        found = self.repo.find("l")
        if self.saved_version == 0:
            assert found is None
            self.ledger = self.repo.new("l")
        else:
            assert found is not None
            self.ledger = found
        self.current = list(self.saved)
        self.version = self.saved_version

    @invariant()
    def matches_the_reference(self) -> None:
        assert self.ledger.entries == self.current
        assert self.ledger.version == self.version
        assert self.ledger.stored_version == self.saved_version
        assert self.store.stream_version("Ledger-l") == self.saved_version


LedgerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestLedger = LedgerMachine.TestCase
