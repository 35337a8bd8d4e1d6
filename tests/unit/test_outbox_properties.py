"""Stateful property test: relays that fail, crash and race never break per-key order.

Hypothesis drives writers, two relays (whose publishes fail at random), relays that
crash holding their claim, and time. Whatever happens, a message is first published
only after every earlier message with the same key was published, and once the
failures stop every message gets published.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import seawall
from seawall.clock import ManualClock
from seawall.messaging.outbox import Outbox, OutboxMessage, OutboxRelay
from seawall.resilience import constant

KEYS = st.sampled_from(["a", "b", "c", None])
LEASE = 30.0
BACKOFF = 5.0


class RelayOrder(RuleBasedStateMachine):
    """Reference model: the list of (id, key) added, in commit order, and first publications."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1000.0)
        self.outbox = Outbox(seawall.connect("memory://"), clock=self.clock)
        self.added: list[tuple[str, str | None]] = []
        self.published: set[str] = set()
        self.failing: set[str] = set()
        self.violations: list[str] = []
        self.relays = [self._relay(f"r{n}") for n in range(2)]

    def _relay(self, name: str) -> OutboxRelay:
        return OutboxRelay(
            self.outbox,
            self._publish,
            retry=None,
            backoff=constant(BACKOFF),
            lease=LEASE,
            clock=self.clock,
            name=name,
        )

    def _publish(self, message: OutboxMessage) -> None:
        if message.id in self.failing:
            raise ConnectionError("down")
        if message.id not in self.published and message.key is not None:
            for earlier, key in self.added:
                if earlier == message.id:
                    break
                if key == message.key and earlier not in self.published:
                    self.violations.append(f"{message.id} before {earlier} (key {key})")
        self.published.add(message.id)

    @rule(key=KEYS, count=st.integers(1, 3))
    def write(self, key: str | None, count: int) -> None:
        ids = self.outbox.add_many("t", list(range(count)), key=key)
        self.added.extend((message_id, key) for message_id in ids)

    @precondition(lambda self: bool(self.added))
    @rule(data=st.data())
    def break_some(self, data: Any) -> None:
        pending = [m for m, _ in self.added if m not in self.published]
        if pending:
            self.failing.add(data.draw(st.sampled_from(pending)))

    @rule(data=st.data())
    def heal_some(self, data: Any) -> None:
        if self.failing:
            self.failing.discard(data.draw(st.sampled_from(sorted(self.failing))))

    @rule(which=st.integers(0, 1), batch=st.integers(1, 5))
    def relay_cycle(self, which: int, batch: int) -> None:
        relay = self.relays[which]
        relay.batch_size = batch
        relay.run_once()

    @rule(batch=st.integers(1, 5))
    def relay_crashes_holding_a_claim(self, batch: int) -> None:
        self.outbox.store.claim("crashed", batch, LEASE)

    @rule(seconds=st.sampled_from([1.0, BACKOFF, LEASE]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def order_per_key_holds(self) -> None:
        assert self.violations == []

    def teardown(self) -> None:
        self.failing.clear()
        self.clock.advance(LEASE + BACKOFF)
        for relay in self.relays:
            relay.drain()
        assert self.violations == []
        assert {m for m, _ in self.added} == self.published
        self.outbox.close()


RelayOrder.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestRelayOrder = RelayOrder.TestCase
