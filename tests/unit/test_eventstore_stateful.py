"""A hypothesis state machine: the memory and SQLite stores against a plain reference model."""

from __future__ import annotations

import itertools
import uuid

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import seawall
from seawall.engines import Engine
from seawall.eventsourcing import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    NewEvent,
    open_event_store,
)

STREAMS = st.sampled_from(["a", "b", "c"])
EXPECTED = st.one_of(st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]), st.integers(0, 6))
TEXTS = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5),
    max_size=3,
)

_engines: dict[str, Engine] = {}
_counter = itertools.count()


def _engine(kind: str) -> Engine:
    if kind not in _engines:
        _engines[kind] = seawall.connect("memory://" if kind == "memory" else "sqlite://:memory:")
    return _engines[kind]


class StoreModel(RuleBasedStateMachine):
    """Appends with random expected versions must match a list-per-stream model."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, list[str]] = {}
        self.log: list[tuple[str, str]] = []
        self.store: EventStore

    @initialize()
    def open(self) -> None:
        self.store = open_event_store(
            _engine(self.kind), table_prefix=f"sm{next(_counter)}_{uuid.uuid4().hex[:6]}_"
        )

    def _accepts(self, stream: str, expected: int) -> bool:
        current = len(self.streams.get(stream, []))
        return (
            expected == ANY
            or (expected == STREAM_EXISTS and current > 0)
            or (expected >= 0 and expected == current)
        )

    @rule(stream=STREAMS, expected=EXPECTED, texts=TEXTS)
    def append(self, stream: str, expected: int, texts: list[str]) -> None:
        events = [NewEvent("T", {"t": text}) for text in texts]
        if self._accepts(stream, expected):
            result = self.store.append(stream, events, expected_version=expected)
            self.streams.setdefault(stream, []).extend(texts)
            self.log.extend((stream, text) for text in texts)
            assert result.version == len(self.streams[stream])
        else:
            with pytest.raises(ConcurrencyError) as caught:
                self.store.append(stream, events, expected_version=expected)
            assert caught.value.actual == len(self.streams.get(stream, []))

    @rule(first=STREAMS, second=STREAMS, expected=EXPECTED, texts=TEXTS)
    def append_batch(self, first: str, second: str, expected: int, texts: list[str]) -> None:
        if first == second:
            return
        requests = [
            AppendRequest(first, [NewEvent("T", {"t": t}) for t in texts], expected),
            AppendRequest(second, [NewEvent("T", {"t": "x"})], ANY),
        ]
        if self._accepts(first, expected):
            self.store.append_batch(requests)
            for stream, added in ((first, texts), (second, ["x"])):
                self.streams.setdefault(stream, []).extend(added)
                self.log.extend((stream, text) for text in added)
        else:
            with pytest.raises(ConcurrencyError):
                self.store.append_batch(requests)

    @rule(stream=STREAMS, start=st.integers(0, 8), limit=st.one_of(st.none(), st.integers(1, 4)))
    def read_backwards(self, stream: str, start: int, limit: int | None) -> None:
        texts = self.streams.get(stream, [])
        expected = list(reversed(texts[: min(start, len(texts))]))
        if limit is not None:
            expected = expected[:limit]
        events = self.store.read_stream(stream, from_version=start, backwards=True, limit=limit)
        assert [e.data["t"] for e in events] == expected

    @invariant()
    def streams_match(self) -> None:
        for stream, texts in self.streams.items():
            events = self.store.read_stream(stream)
            assert [e.data["t"] for e in events] == texts
            assert [e.version for e in events] == list(range(1, len(texts) + 1))

    @invariant()
    def the_log_matches(self) -> None:
        events = self.store.read_all(limit=10_000)
        assert [(e.stream_id, e.data["t"]) for e in events] == self.log
        positions = [e.position for e in events]
        assert positions == sorted(set(positions))

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.drop_tables()


class SqliteStoreModel(StoreModel):
    kind = "sqlite"


TestMemoryStore = StoreModel.TestCase
TestMemoryStore.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
TestSqliteStore = SqliteStoreModel.TestCase
TestSqliteStore.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
