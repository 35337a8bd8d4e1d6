"""A stateful check of the memory semaphore store against a small reference model.

Random acquires (shared and exclusive), releases, extends and clock steps; after each
step the store must agree with the model on who holds, and every grant and refusal
must be the one the rules call for: never over the limit, an exclusive holder alone,
no reader past a waiting writer's intent, no refusal without a reason, and fencing
tokens strictly increasing.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from seawall.clock import ManualClock
from seawall.coordination import MemorySemaphoreStore

OWNERS = st.sampled_from(["a", "b", "c", "d", "e"])
LIMIT = 3
NAME = "model"


class SemaphoreModel(RuleBasedStateMachine):
    """Reference: owner -> (slot, exclusive, expires at), intents, the last token."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(0.0)
        self.store = MemorySemaphoreStore(self.clock)
        self.holders: dict[str, tuple[int, bool, float]] = {}
        self.intents: dict[str, float] = {}
        self.last_token = 0

    def _prune(self) -> None:
        now = self.clock.now()
        self.holders = {o: h for o, h in self.holders.items() if h[2] > now}
        self.intents = {o: t for o, t in self.intents.items() if t > now}

    @rule(owner=OWNERS, ttl=st.sampled_from([1.0, 2.0, 5.0]), exclusive=st.booleans())
    def acquire(self, owner: str, ttl: float, exclusive: bool) -> None:
        self._prune()
        now = self.clock.now()
        grant = self.store.acquire(NAME, owner, ttl, LIMIT, exclusive=exclusive, intent_ttl=1.5)
        others = {o: h for o, h in self.holders.items() if o != owner}
        if owner in self.holders:
            allowed = True
        elif exclusive:
            allowed = not self.holders
        else:
            allowed = (
                len(self.holders) < LIMIT
                and not any(h[1] for h in self.holders.values())
                and not any(o != owner for o in self.intents)
            )
        assert bool(grant.fencing_token) == allowed, (grant, self.holders, self.intents)
        if allowed:
            assert grant.fencing_token > self.last_token
            self.last_token = grant.fencing_token
            if owner in self.holders:
                slot, held_exclusive, _ = self.holders[owner]
                assert grant.slot == slot
            else:
                held_exclusive = exclusive
                assert grant.slot not in {h[0] for h in others.values()}
                assert 0 <= grant.slot < LIMIT
            self.holders[owner] = (grant.slot, held_exclusive, now + ttl)
            self.intents.pop(owner, None)
        elif exclusive:
            self.intents[owner] = now + 1.5

    @rule(owner=OWNERS)
    def release(self, owner: str) -> None:
        self._prune()
        released = self.store.release(NAME, owner)
        assert released == (owner in self.holders)
        self.holders.pop(owner, None)
        self.intents.pop(owner, None)

    @rule(owner=OWNERS, ttl=st.sampled_from([1.0, 3.0]))
    def extend(self, owner: str, ttl: float) -> None:
        self._prune()
        extended = self.store.extend(NAME, owner, ttl)
        assert extended == (owner in self.holders)
        if extended:
            slot, exclusive, _ = self.holders[owner]
            self.holders[owner] = (slot, exclusive, self.clock.now() + ttl)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        self._prune()
        state = self.store.state(NAME)
        seen = {h.owner: (h.slot, h.exclusive) for h in state.holders}
        assert seen == {o: (h[0], h[1]) for o, h in self.holders.items()}
        assert state.last_token == self.last_token
        assert len(seen) <= LIMIT
        if any(exclusive for _, exclusive in seen.values()):
            assert len(seen) == 1
        assert len({slot for slot, _ in seen.values()}) == len(seen)


TestSemaphoreModel = SemaphoreModel.TestCase
TestSemaphoreModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
