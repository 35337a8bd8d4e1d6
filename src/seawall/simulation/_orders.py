"""The simulated orders service: seawall's saga core, retry and breaker cores, over the network.

The saga is :data:`seawall.shop.logic.ORDER_SAGA_STEPS` turned into a seawall
:class:`~seawall.workflows.Saga`, driven by the same :class:`SagaDriver` the real
orchestrators use. Only the effects differ: a ``Commit`` writes the history to this
node's disk (in the same transaction as the order and its outbox event), a step is a
request to a participant over the simulated network, guarded by a seawall retry
policy and a circuit breaker per participant, both on the simulated clock.

After a crash, :meth:`OrdersService.boot` folds each unfinished saga's history and
goes on where the disk says it was (a step started without an outcome runs again,
with the same idempotency key), and sends the outbox and the follow-ups again.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from seawall.errors import CircuitOpenError
from seawall.resilience._backoff import exponential
from seawall.resilience._retry import Retry, _RetryRun
from seawall.resilience.breaker._config import BreakerConfig, CountWindow
from seawall.resilience.breaker._core import REJECTED, BreakerCore
from seawall.shop import logic
from seawall.simulation._network import Message
from seawall.simulation._node import RecordsTransaction
from seawall.simulation._services import Service
from seawall.workflows.saga._core import (
    Commit,
    Done,
    RunCompensation,
    RunSteps,
    SagaDriver,
    SagaState,
    StepOutcome,
)
from seawall.workflows.saga._definition import Saga, Step, StepContext
from seawall.workflows.saga._model import EntryKind, SagaEntry, SagaStatus, Signals

if TYPE_CHECKING:
    from seawall.simulation._world import World

__all__ = ["ORDER_SAGA", "OrdersService"]

CALL_TIMEOUT: Final = 0.05
"""Seconds the orders service waits for a participant's reply before counting a failure."""
PUMP_INTERVAL: Final = 0.05
"""Seconds between two sends of the unacknowledged outbox events and follow-ups."""
NO_SIGNALS: Final = Signals()


def _over_the_network(context: StepContext) -> Any:  # pragma: no cover - never called
    raise RuntimeError(f"step {context.step!r} runs as a message in the simulation")


def _order_saga() -> Saga:
    steps = [
        Step(
            spec.name,
            _over_the_network,
            _over_the_network,
            compensate_failed=True,  # a step that timed out may still have taken effect
        )
        for spec in logic.ORDER_SAGA_STEPS
    ]
    return Saga("order", steps)


ORDER_SAGA: Final = _order_saga()
"""The shop's order saga (reserve stock, charge payment, schedule shipping) as a seawall saga."""
_SPECS: Final = {spec.name: spec for spec in logic.ORDER_SAGA_STEPS}


@dataclass(slots=True)
class _Call:
    """One step (or compensation) being carried out: its attempts so far and the one in flight."""

    saga_id: str
    step: str
    compensating: bool
    service: str
    operation: str
    payload: dict[str, Any]
    retry: _RetryRun
    attempt_started: float = 0.0
    ticket: int = 0
    request: str = ""


@dataclass(slots=True)
class _Group:
    """The steps of one group still running, and the outcomes of those that finished."""

    waiting: list[str]
    outcomes: list[StepOutcome] = field(default_factory=list)


class OrdersService(Service):
    """Takes orders from clients and runs each one's saga against the participants."""

    def __init__(self, name: str, world: World, mutations: frozenset[str] = frozenset()) -> None:
        super().__init__(name, world, mutations)
        rng = world.random("orders:backoff")
        clock = world.clock
        self.step_policy = Retry(
            5,
            wait=exponential(0.01, cap=0.2, jitter="full", random=rng),
            clock=clock,
            name="orders.step",
        )
        self.compensation_policy = Retry(
            None,
            wait=exponential(0.01, cap=0.5, jitter="full", random=rng),
            clock=clock,
            name="orders.compensation",
        )
        self.breaker_config = BreakerConfig(
            window=CountWindow(10), minimum_calls=5, open_for=0.2, half_open_calls=2
        )
        self.forget()

    # ------------------------------------------------------------------ memory

    def forget(self) -> None:
        """Lose everything kept in memory: drivers, calls in flight, breakers, pumps."""
        self.drivers: dict[str, SagaDriver] = {}
        self.groups: dict[str, _Group] = {}
        self.calls: dict[str, _Call] = {}
        self.breakers: dict[str, BreakerCore] = {}
        self._requests = itertools.count(1)
        self._pumping = False
        self.outgoing: dict[str, float] = {}
        """Outbox and follow-up keys still to be acknowledged, with when each was last sent."""

    def boot(self) -> None:
        """Resume every unfinished saga from its history; send the outbox and follow-ups again."""
        for key in self.storage.keys("saga:"):
            if not self.up:
                return
            if "forget-sagas" in self.mutations:
                break
            row = self.storage.get(key)
            if row is None or row["status"] not in ("running", "compensating"):
                continue
            saga_id = key.removeprefix("saga:")
            entries = [
                SagaEntry(seq, EntryKind(kind), step, data, 0.0)
                for seq, kind, step, data in row["entries"]
            ]
            driver = SagaDriver(
                ORDER_SAGA, saga_id, row["input"], SagaState.fold(entries), NO_SIGNALS
            )
            self.drivers[saga_id] = driver
            self.decide(f"saga {saga_id} resumed ({row['status']})")
            self._advance(saga_id)
        if self.up:
            self._queue(self.storage.keys("followup:") + self.storage.keys("outbox:"))

    # ---------------------------------------------------------------- messages

    def on_message(self, message: Message) -> None:
        """A client's order, a participant's reply, or the read model's acknowledgement."""
        kind = message.kind
        if kind == "place":
            self._place(message)
        elif kind == "reply":
            self._reply(message.body)
        elif kind == "ack":
            self._acknowledged(int(message.body["sequence"]))

    def _place(self, message: Message) -> None:
        body = message.body
        order_id = str(body.get("order_id"))
        started: list[SagaDriver] = []
        outgoing: list[str] = []

        def work(transaction: RecordsTransaction) -> dict[str, Any]:
            reply = logic.place(transaction, order_id, body.get("items"), str(body.get("client")))
            if reply.get("event") is not None:
                self._publish(transaction, reply["event"], outgoing)
                order = {key: reply[key] for key in ("order_id", "items", "amount")}
                driver, entries = SagaDriver.starting(ORDER_SAGA, order_id, order)
                transaction.put(
                    f"saga:{order_id}",
                    {
                        "input": order,
                        "status": SagaStatus.RUNNING.value,
                        "reason": None,
                        "entries": [[e.seq, e.kind.value, e.step, e.data] for e in entries],
                    },
                )
                started.append(driver)
            return reply

        alive, reply = self.transact(work)
        if not alive:
            return
        answer = {key: value for key, value in reply.items() if key != "event"}
        self.decide(f"place {order_id} {'new' if started else 'again'} -> {answer.get('state')}")
        self.send(message.source, "placed", answer)
        self._queue(outgoing)
        if started:
            driver = started[0]
            driver.committed(NO_SIGNALS)
            self.drivers[order_id] = driver
            self._advance(order_id)

    # ------------------------------------------------------------------- sagas

    def _advance(self, saga_id: str) -> None:
        """Carry out the driver's actions until it waits for a reply or is done."""
        while self.up:
            driver = self.drivers.get(saga_id)
            if driver is None:
                return
            action = driver.next_action()
            if type(action) is Commit:
                if not self._commit(saga_id, action):
                    return
                driver.committed(NO_SIGNALS)
            elif type(action) is RunSteps:
                self.groups[saga_id] = _Group(list(action.steps))
                for step in action.steps:
                    self._start_call(saga_id, step, compensating=False)
                return
            elif type(action) is RunCompensation:
                if (
                    "skip-release" in self.mutations
                    and _SPECS[action.step].compensation == "release"
                ):
                    self.decide(f"saga {saga_id} skips the compensation of {action.step}")
                    driver.compensation_finished(action.step, None)
                    continue
                self._start_call(saga_id, action.step, compensating=True)
                return
            elif type(action) is Done:
                self.drivers.pop(saga_id, None)
                self.decide(f"saga {saga_id} done: {action.result.status.value}")
                return

    def _commit(self, saga_id: str, action: Commit) -> bool:
        kinds = ",".join(
            f"{entry.kind.value}{'(' + entry.step + ')' if entry.step else ''}"
            for entry in action.entries
        )
        self.decide(f"saga {saga_id} commit {kinds} -> {action.status.value}")
        outgoing: list[str] = []

        def work(transaction: RecordsTransaction) -> None:
            key = f"saga:{saga_id}"
            row = transaction.get(key)
            if row is None:  # pragma: no cover - the saga row is written with the order
                raise RuntimeError(f"saga {saga_id} has no row")
            row["entries"].extend([e.seq, e.kind.value, e.step, e.data] for e in action.entries)
            row["status"] = action.status.value
            row["reason"] = action.reason
            transaction.put(key, row)
            if action.status is SagaStatus.COMPLETED:
                reply = logic.confirm(transaction, saga_id)
                if reply.get("event") is not None:
                    self._publish(transaction, reply["event"], outgoing)
                for service, operation in (("shipping", "dispatch"), ("inventory", "ship")):
                    key = f"followup:{saga_id}:{operation}"
                    transaction.put(
                        key, {"service": service, "operation": operation, "order_id": saga_id}
                    )
                    outgoing.append(key)
            elif action.status is SagaStatus.COMPENSATED:
                reply = logic.compensated(transaction, saga_id, action.reason or "")
                if reply.get("event") is not None:
                    self._publish(transaction, reply["event"], outgoing)

        alive, _ = self.transact(work)
        if alive:
            self._queue(outgoing)
        return alive

    def _publish(
        self, transaction: RecordsTransaction, event: dict[str, Any], keys: list[str]
    ) -> None:
        """Record an order event in the log and in the outbox, in the caller's transaction."""
        sequence = int(transaction.get("meta:events") or 0) + 1
        transaction.put("meta:events", sequence)
        transaction.put(f"event:{sequence:08d}", event)
        transaction.put(f"outbox:{sequence:08d}", event)
        keys.append(f"outbox:{sequence:08d}")

    # -------------------------------------------------------------------- calls

    def _start_call(self, saga_id: str, step: str, *, compensating: bool) -> None:
        driver = self.drivers[saga_id]
        service, operation, payload = logic.step_request(
            _SPECS[step], driver.input, compensating=compensating
        )
        policy = self.compensation_policy if compensating else self.step_policy
        call = _Call(
            saga_id,
            step,
            compensating,
            service,
            operation,
            payload,
            _RetryRun(policy, self.world.clock.now()),
        )
        self._attempt(call)

    def _breaker(self, service: str) -> BreakerCore:
        breaker = self.breakers.get(service)
        if breaker is None:
            breaker = self.breakers[service] = BreakerCore(
                self.breaker_config, self.world.clock.now(), fast_path=False
            )
        return breaker

    def _attempt(self, call: _Call) -> None:
        now = self.world.clock.now()
        breaker = self._breaker(call.service)
        ticket = breaker.try_acquire(now)
        call.attempt_started = now
        if ticket == REJECTED:
            state = breaker.poll(now).value
            self.decide(f"breaker {call.service} {state}: {call.operation} {call.saga_id} rejected")
            self._failed(
                call, CircuitOpenError(call.service, state, retry_after=breaker.retry_after(now))
            )
            return
        request = f"{self.incarnation}.{next(self._requests)}"
        call.ticket = ticket
        call.request = request
        self.calls[request] = call
        self.send(
            call.service,
            "request",
            {"request": request, "operation": call.operation, "payload": call.payload},
        )
        self.timer(CALL_TIMEOUT, lambda: self._timed_out(request), f"timeout {request}")

    def _timed_out(self, request: str) -> None:
        call = self.calls.pop(request, None)
        if call is None:
            return
        now = self.world.clock.now()
        self._breaker(call.service).on_error(now, now - call.attempt_started, call.ticket)
        self.decide(f"{call.operation} {call.saga_id} timed out (request {request})")
        self._failed(call, TimeoutError(f"{call.service} did not answer in {CALL_TIMEOUT}s"))

    def _failed(self, call: _Call, error: Exception) -> None:
        now = self.world.clock.now()
        wait = call.retry.after_failure(call.attempt_started, now, error, None)
        if wait is None:
            attempts = len(call.retry.attempts)
            self.decide(f"{call.operation} {call.saga_id} gave up after {attempts} attempts")
            self._finished(call, None, f"{call.service} failed {attempts} times: {error}")
            return
        self.timer(wait, lambda: self._attempt(call), f"retry {call.operation} {call.saga_id}")

    def _reply(self, body: dict[str, Any]) -> None:
        request = str(body["request"])
        if request.startswith("f:"):
            self._followed_up(request.removeprefix("f:"), body["reply"])
            return
        call = self.calls.pop(request, None)
        if call is None:
            self.decide(f"late reply to {request} ignored")
            return
        now = self.world.clock.now()
        self._breaker(call.service).on_success(now, now - call.attempt_started, call.ticket)
        reply = body["reply"]
        error = None if reply.get("ok") else str(reply.get("reason"))
        self._finished(call, reply, error)

    def _finished(self, call: _Call, reply: dict[str, Any] | None, error: str | None) -> None:
        saga_id = call.saga_id
        driver = self.drivers.get(saga_id)
        if driver is None:  # pragma: no cover - calls die with the driver on a crash
            return
        if call.compensating:
            driver.compensation_finished(call.step, error)
            self._advance(saga_id)
            return
        if error is None:
            outcome = StepOutcome(call.step, text=json.dumps(reply, sort_keys=True), value=reply)
        else:
            outcome = StepOutcome(call.step, error=error, compensate=True)
        group = self.groups[saga_id]
        group.waiting.remove(call.step)
        group.outcomes.append(outcome)
        if not group.waiting:
            del self.groups[saga_id]
            driver.steps_finished(group.outcomes)
            self._advance(saga_id)

    # ---------------------------------------------------- outbox and follow-ups

    def _pump(self) -> None:
        """Send each unacknowledged outbox event and follow-up not sent in the last interval.

        While any is left, a timer sends them again every :data:`PUMP_INTERVAL`.
        """
        if not self.up or not self.outgoing:
            return
        now = self.world.clock.now()
        for key, sent_at in self.outgoing.items():
            if now - sent_at < PUMP_INTERVAL:
                continue
            self.outgoing[key] = now
            row = self.storage.get(key)
            if row is None:  # pragma: no cover - outgoing lists committed rows
                continue
            if key.startswith("outbox:"):
                body = {"sequence": int(key.removeprefix("outbox:")), "event": row}
                self.send("readmodel", "event", body)
            else:
                body = {
                    "request": f"f:{key}",
                    "operation": row["operation"],
                    "payload": {"order_id": row["order_id"]},
                }
                self.send(row["service"], "request", body)
        if not self._pumping:
            self._pumping = True
            self.timer(PUMP_INTERVAL, self._pump_again, "pump")

    def _pump_again(self) -> None:
        self._pumping = False
        self._pump()

    def _queue(self, keys: list[str]) -> None:
        """Committed outbox or follow-up rows to send."""
        for key in keys:
            self.outgoing.setdefault(key, -math.inf)
        if keys:
            self._pump()

    def _acknowledged(self, sequence: int) -> None:
        key = f"outbox:{sequence:08d}"
        if self.storage.get(key) is None:
            return
        alive, _ = self.transact(lambda transaction: transaction.delete(key))
        if alive:
            self.outgoing.pop(key, None)

    def _followed_up(self, key: str, reply: dict[str, Any]) -> None:
        if self.storage.get(key) is None:
            return
        if not reply.get("ok"):
            self.decide(f"{key} refused: {reply.get('reason')}")
        alive, _ = self.transact(lambda transaction: transaction.delete(key))
        if alive:
            self.outgoing.pop(key, None)

    # ------------------------------------------------------------------ reading

    def events(self) -> list[dict[str, Any]]:
        """Every order event published, in order."""
        return [dict(self.storage.get(key) or {}) for key in self.storage.keys("event:")]

    def orders(self) -> dict[str, Any]:
        """Every order row, as committed."""
        return {key: self.storage.get(key) for key in self.storage.keys("order:")}
