"""Hypothesis drives the memory and SQLite queues against a plain reference model.

The model is a list scanned in full at every step (obviously right, slow); the
engines use heaps and a clustered table (fast, easy to get wrong). After every step
the two must agree on what was received, what a receipt could settle, the stats,
the head of the queue, and the dead letters.

The order both engines keep: higher priority first, then place in line. A message
takes its place when it is sent, when its delay ends (noticed at the next receive)
or when it is redriven; a redelivery (expired, or nacked without delay) keeps it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import seawall
from seawall.clock import ManualClock
from seawall.messaging.queue import Message, QueueStats, StaleReceiptError, open_queue

MAX_DELIVERIES = 3


@dataclass
class _Modelled:
    key: int
    priority: int
    state: str  # "ready" | "waiting" | "dead"
    available_at: float
    token: int | None = None
    count: int = 0
    place: int = 0  # place in line when ready; order of death when dead


class _Model:
    """The queue contract, written as plainly as possible."""

    def __init__(self) -> None:
        self.messages: dict[int, _Modelled] = {}
        self.tokens = 0
        self.places = 0

    def _next_place(self) -> int:
        self.places += 1
        return self.places

    def send(self, key: int, priority: int, delay: float, now: float) -> None:
        state = "waiting" if delay > 0 else "ready"
        message = _Modelled(key, priority, state, now + delay)
        if state == "ready":
            message.place = self._next_place()
        self.messages[key] = message

    def _due_delayed(self, now: float) -> list[_Modelled]:
        due = [
            m
            for m in self.messages.values()
            if m.state == "waiting" and m.token is None and m.available_at <= now
        ]
        return sorted(due, key=lambda m: (m.available_at, m.key))

    def _in_line(self, now: float) -> list[_Modelled]:
        """Ready messages and expired deliveries, in their places."""
        ready = [
            m
            for m in self.messages.values()
            if m.state == "ready"
            or (m.state == "waiting" and m.token is not None and m.available_at <= now)
        ]
        return sorted(ready, key=lambda m: (-m.priority, m.place))

    def _kill(self, message: _Modelled, now: float) -> None:
        message.state, message.token, message.available_at = "dead", None, now
        message.place = self._next_place()

    def receive(self, count: int, visibility_timeout: float, now: float) -> list[tuple[int, int]]:
        for message in self._due_delayed(now):  # delays that ended join the line
            message.state, message.place = "ready", self._next_place()
        claimed: list[tuple[int, int]] = []
        for message in self._in_line(now):
            if len(claimed) == count:
                break
            if message.count >= MAX_DELIVERIES:
                self._kill(message, now)
                continue
            self.tokens += 1
            message.count += 1
            message.state, message.token = "waiting", self.tokens
            message.available_at = now + visibility_timeout
            claimed.append((message.key, self.tokens))
        return claimed

    def held(self, key: int, token: int) -> _Modelled | None:
        message = self.messages.get(key)
        if message is None or message.state == "dead" or message.token != token:
            return None
        return message

    def ack(self, key: int, token: int) -> bool:
        if self.held(key, token) is None:
            return False
        del self.messages[key]
        return True

    def nack(self, key: int, token: int, delay: float, now: float) -> bool:
        message = self.held(key, token)
        if message is None:
            return False
        message.token = None
        if message.count >= MAX_DELIVERIES:
            self._kill(message, now)
        elif delay > 0:
            message.state, message.available_at = "waiting", now + delay
        else:
            message.state, message.available_at = "ready", now
        return True

    def extend(self, key: int, token: int, visibility_timeout: float, now: float) -> bool:
        message = self.held(key, token)
        if message is None:
            return False
        message.state, message.available_at = "waiting", now + visibility_timeout
        return True

    def redrive(self, now: float) -> int:
        dead = sorted(
            (m for m in self.messages.values() if m.state == "dead"), key=lambda m: m.place
        )
        for message in dead:
            message.state, message.available_at = "ready", now
            message.token, message.count = None, 0
            message.place = self._next_place()
        return len(dead)

    def stats(self, now: float) -> QueueStats:
        live = [m for m in self.messages.values() if m.state != "dead"]
        ready = sum(1 for m in live if m.state == "ready" or m.available_at <= now)
        hidden = [m for m in live if m.state == "waiting" and m.available_at > now]
        return QueueStats(
            ready=ready,
            in_flight=sum(1 for m in hidden if m.token is not None),
            delayed=sum(1 for m in hidden if m.token is None),
            dead=sum(1 for m in self.messages.values() if m.state == "dead"),
        )

    def head(self, limit: int, now: float) -> list[int]:
        """What receive would hand out next: due delays join behind their priority."""
        keyed = [((-m.priority, 0, m.place, 0.0), m.key) for m in self._in_line(now)] + [
            ((-m.priority, 1, m.available_at, m.key), m.key) for m in self._due_delayed(now)
        ]
        return [key for _, key in sorted(keyed)[:limit]]

    def dead_keys(self) -> list[int]:
        dead = [m for m in self.messages.values() if m.state == "dead"]
        return [m.key for m in sorted(dead, key=lambda m: m.place)]


class _QueueMachine(RuleBasedStateMachine):
    url = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="seawall-queue-model-")
        self.engine = seawall.connect(self.url.format(directory=self.directory))
        self.clock = ManualClock(1000.0)
        self.queue = open_queue(
            self.engine, "model", clock=self.clock, max_deliveries=MAX_DELIVERIES
        )
        self.model = _Model()
        self.sent = 0
        self.receipts: list[tuple[Message, int]] = []  # (store message, model token)

    def teardown(self) -> None:
        self.queue.close()
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(priority=st.integers(0, 2), delay=st.sampled_from([0.0, 0.0, 1.0, 5.0]))
    def send(self, priority: int, delay: float) -> None:
        self.sent += 1
        self.queue.send(self.sent, priority=priority, delay=delay)
        self.model.send(self.sent, priority, delay, self.clock.now())

    @rule(count=st.integers(1, 3), visibility_timeout=st.sampled_from([1.0, 4.0, 10.0]))
    def receive(self, count: int, visibility_timeout: float) -> None:
        got = self.queue.receive(count, visibility_timeout=visibility_timeout)
        expected = self.model.receive(count, visibility_timeout, self.clock.now())
        assert [m.body for m in got] == [key for key, _ in expected]
        tokens = dict(expected)
        for message in got:
            assert message.delivery_count == self.model.messages[message.body].count
            self.receipts.append((message, tokens[message.body]))

    def _receipt(self, pick: int) -> tuple[Message, int] | None:
        return self.receipts[pick % len(self.receipts)] if self.receipts else None

    def _settle(self, action: Any, expected: bool) -> None:
        if expected:
            action()
        else:
            with pytest.raises(StaleReceiptError):
                action()

    @rule(pick=st.integers(0, 50))
    def ack(self, pick: int) -> None:
        chosen = self._receipt(pick)
        if chosen is not None:
            message, token = chosen
            self._settle(message.ack, self.model.ack(message.body, token))

    @rule(pick=st.integers(0, 50), delay=st.sampled_from([0.0, 2.0]))
    def nack(self, pick: int, delay: float) -> None:
        chosen = self._receipt(pick)
        if chosen is not None:
            message, token = chosen
            expected = self.model.nack(message.body, token, delay, self.clock.now())
            self._settle(lambda: message.nack(delay=delay, error="failed"), expected)

    @rule(pick=st.integers(0, 50), visibility_timeout=st.sampled_from([1.0, 6.0]))
    def extend(self, pick: int, visibility_timeout: float) -> None:
        chosen = self._receipt(pick)
        if chosen is not None:
            message, token = chosen
            now = self.clock.now()
            expected = self.model.extend(message.body, token, visibility_timeout, now)
            self._settle(lambda: message.extend_visibility(visibility_timeout), expected)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def redrive(self) -> None:
        assert self.queue.dead_letters.redrive() == self.model.redrive(self.clock.now())

    @invariant()
    def agree_on_stats_head_and_dead_letters(self) -> None:
        now = self.clock.now()
        assert self.queue.stats() == self.model.stats(now)
        assert [m.body for m in self.queue.peek(4)] == self.model.head(4, now)
        assert [d.body for d in self.queue.dead_letters.list()] == self.model.dead_keys()


class MemoryQueueMachine(_QueueMachine):
    url = "memory://"


class SqliteQueueMachine(_QueueMachine):
    url = "sqlite:///{directory}/model.db"


_settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestMemoryQueueAgainstModel = _settings(MemoryQueueMachine).TestCase
TestSqliteQueueAgainstModel = _settings(SqliteQueueMachine).TestCase
