"""The capture's bookkeeping (no I/O): where a slot may advance, and the snapshot's progress."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.errors import ConfigurationError
from seawall.eventsourcing.cdc import ChangeEvent, ChangePosition, ChangeSource
from seawall.eventsourcing.cdc._cursor import (
    SnapshotProgress,
    StreamTracker,
    check_max_events,
    check_position,
)
from seawall.eventsourcing.cdc._decoding import DecodedTransaction

SOURCE = ChangeSource("postgresql", "s", "d", "public", "t", 0)


def event(offset: int, sequence: int, op: str = "c") -> ChangeEvent:
    return ChangeEvent(op, None, {"id": sequence}, SOURCE, 0, ChangePosition(offset, sequence))


def transaction(end: int, size: int, rows: int | None = None) -> DecodedTransaction:
    return DecodedTransaction(
        end, end, size + 2 if rows is None else rows, [event(end, i) for i in range(size)]
    )


def test_a_slot_advances_only_past_whole_transactions() -> None:
    tracker = StreamTracker()
    tracker.accept([transaction(10, 2), transaction(20, 1)])
    assert [e.position for e in tracker.take(2)] == [(10, 0), (10, 1)]
    assert tracker.advance_target(ChangePosition(10, 0)) is None  # half of transaction 10
    assert tracker.advance_target(ChangePosition(10, 1)) == 10
    tracker.advanced(10)
    assert tracker.pending_rows == 3
    tracker.take(1)
    assert tracker.advance_target(ChangePosition(20, 0)) == 20


def test_empty_transactions_are_passed_without_confirmation() -> None:
    tracker = StreamTracker()
    tracker.accept([transaction(5, 0), transaction(10, 1), transaction(15, 0), transaction(20, 1)])
    assert tracker.idle_target() == 5
    tracker.advanced(5)
    tracker.take(2)
    assert tracker.advance_target(ChangePosition(10, 0)) == 15  # and the empty one after it


def test_a_repeated_peek_does_not_hand_out_anything_twice() -> None:
    tracker = StreamTracker()
    assert tracker.accept([transaction(10, 2)]) == 2
    assert len(tracker.take(1)) == 1
    assert tracker.accept([transaction(10, 2), transaction(20, 1)]) == 1
    assert [e.position for e in tracker.take(10)] == [(10, 1), (20, 0)]
    assert tracker.take(10) == []


def test_positions_not_handed_out_cannot_be_confirmed() -> None:
    tracker = StreamTracker()
    with pytest.raises(ConfigurationError, match="has not been delivered"):
        tracker.advance_target(ChangePosition(10, 0))
    tracker.accept([transaction(10, 2)])
    tracker.take(1)
    with pytest.raises(ConfigurationError, match=r"\(10, 1\) has not been delivered"):
        tracker.advance_target(ChangePosition(10, 1))


def test_unread_events_come_back_first() -> None:
    tracker = StreamTracker()
    tracker.accept([transaction(10, 3)])
    taken = tracker.take(3)
    tracker.unread(taken[1:], taken[0].position)
    assert tracker.delivered == ChangePosition(10, 0)
    assert [e.position for e in tracker.take(5)] == [(10, 1), (10, 2)]


def test_reset_forgets_everything() -> None:
    tracker = StreamTracker()
    tracker.accept([transaction(10, 3)])
    tracker.take(1)
    tracker.reset()
    assert (tracker.buffered, tracker.pending_rows, tracker.delivered) == (0, 0, None)
    assert tracker.accept([transaction(10, 3)]) == 3


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    steps=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5)), min_size=1, max_size=12),
)
def test_the_slot_never_passes_an_unconfirmed_change(
    sizes: list[int], steps: list[tuple[int, int]]
) -> None:
    """Model: events are confirmed in order; the slot may only pass confirmed events."""
    tracker = StreamTracker()
    transactions = [transaction((index + 1) * 10, size) for index, size in enumerate(sizes)]
    tracker.accept(transactions)
    all_events = [e for t in transactions for e in t.events]
    handed: list[ChangeEvent] = []
    slot = 0
    confirmed = ChangePosition(0, -1)
    for take, back in steps:
        handed.extend(tracker.take(take))
        if not handed:
            continue
        choice = handed[max(0, len(handed) - 1 - back)].position
        if choice <= confirmed:
            continue
        target = tracker.advance_target(choice)
        confirmed = choice
        if target is not None and target > slot:
            # Every change in a transaction the slot passes has been confirmed.
            passed = [e for e in all_events if e.position.offset <= target]
            assert all(e.position <= confirmed for e in passed)
            tracker.advanced(target)
            slot = target
        # Liveness: once a transaction's last change is confirmed, the slot may pass it.
        complete = [
            t.end_lsn
            for t in transactions
            if t.events and t.events[-1].position <= confirmed and t.end_lsn <= confirmed.offset
        ]
        if complete:
            assert slot >= max(complete)


def test_snapshot_progress_marks_the_last_row_and_completes_on_its_confirmation() -> None:
    progress = SnapshotProgress(active=True)
    assert progress.reading
    assert progress.wanted(2) == 3
    for _ in range(3):
        progress.buffer.append(event(0, progress.next_sequence(), "r"))
    progress.exhausted = True
    assert progress.wanted(2) == 0
    first = progress.take(2)
    assert [e.source.snapshot for e in first] == ["false", "false"]  # as built by this test
    assert progress.total is None
    last = progress.take(2)
    assert [e.source.snapshot for e in last] == ["last"]
    assert progress.total == 3
    assert not progress.reading
    assert not progress.confirm(ChangePosition(0, 2))
    assert progress.confirm(ChangePosition(0, 3))
    assert not progress.active


def test_snapshot_progress_unread_puts_rows_back_and_forgets_the_total() -> None:
    progress = SnapshotProgress(active=True)
    progress.buffer.extend(event(0, progress.next_sequence(), "r") for _ in range(2))
    progress.exhausted = True
    rows = progress.take(5)
    assert progress.total == 2
    progress.unread(rows)
    assert progress.total is None
    assert progress.reading
    assert [e.position.sequence for e in progress.take(5)] == [1, 2]


def test_a_streamed_position_confirms_a_finished_snapshot_too() -> None:
    progress = SnapshotProgress(active=True)
    progress.buffer.append(event(0, progress.next_sequence(), "r"))
    progress.exhausted = True
    progress.take(1)
    assert progress.confirm(ChangePosition(50, 0))


def test_an_empty_snapshot() -> None:
    progress = SnapshotProgress(active=True)
    progress.exhausted = True
    assert progress.empty
    assert progress.take(5) == []


@pytest.mark.parametrize("bad", [0, -1, 100_001, 1.5, True, "10", None])
def test_max_events_must_be_a_sensible_int(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_events"):
        check_max_events(bad)


def test_positions_come_from_events_tuples_or_positions() -> None:
    assert check_position(event(5, 1)) == ChangePosition(5, 1)
    assert check_position((5, 1)) == ChangePosition(5, 1)
    assert isinstance(check_position((5, 1)), ChangePosition)
    for bad in ("5", (5,), (5, "1"), (True, 1), None):
        with pytest.raises(ConfigurationError, match="position"):
            check_position(bad)
