"""The asyncio two-phase coordinator: the same driver, participants called off the event loop.

Participant methods and a blocking decision log run in worker threads
(``asyncio.to_thread``), so database drivers that block never stall the loop; a
participant may instead offer coroutine methods ``aprepare``, ``acommit`` and
``aabort``, which are awaited. Prepares run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from seawall.workflows.two_phase._base import CoordinatorBase, describe
from seawall.workflows.two_phase._core import (
    Complete,
    Deliver,
    Finished,
    Pause,
    Prepare,
    Record,
    TwoPhaseDriver,
)
from seawall.workflows.two_phase._events import (
    TwoPhaseCompleted,
    TwoPhaseRecovered,
    TwoPhaseStarted,
)
from seawall.workflows.two_phase._model import Decision, RecoveryResult, TwoPhaseResult, Vote

__all__ = ["AsyncTwoPhaseCoordinator"]

T = TypeVar("T")


class AsyncTwoPhaseCoordinator(CoordinatorBase):
    """The asyncio twin of :class:`TwoPhaseCoordinator` (same log, participants and rules)."""

    async def run(self, work: Mapping[Any, Any], *, key: str | None = None) -> TwoPhaseResult:
        """Prepare ``work`` on every participant at once, then commit all or none (see the sync twin)."""
        txid, planned = self._plan(work, key)
        if key is not None:
            found = await self._log_call(self.log.load, txid)
            if found is not None:
                result, _ = await self._drive(self._settled(found), {})
                return self._raise_if_aborted(result, None)
        driver = self._driver(txid, (participant.name for participant, _ in planned))
        if self.events.active:
            self.events.emit(TwoPhaseStarted(self.name, txid, driver.participants))
        result, cause = await self._drive(
            driver, {participant.name: item for participant, item in planned}
        )
        return self._raise_if_aborted(result, cause)

    async def recover(self) -> list[RecoveryResult]:
        """Finish every transaction of this coordinator left in doubt by a crash (see the sync twin)."""
        results: list[RecoveryResult] = []
        handled: set[str] = set()
        pending = await self._log_call(self.log.pending, self.name, limit=1_000_000)
        for record in pending:
            handled.add(record.txid)
            results.append(
                await self._recover_one(record.txid, record.decision, record.participants)
            )
        in_doubt: dict[str, list[str]] = {}
        prefix = f"{self.name}:"
        for name, participant in self._participants.items():
            for txid in await asyncio.to_thread(participant.in_doubt, prefix):
                in_doubt.setdefault(txid, []).append(name)
        for txid in sorted(in_doubt):
            if txid in handled:
                continue
            names = in_doubt[txid]
            decision = await self._log_call(
                self.log.decide, txid, Decision.ABORT, coordinator=self.name, participants=names
            )
            results.append(await self._recover_one(txid, decision, tuple(names)))
        return results

    async def aclose(self) -> None:
        """Release nothing of the participants or the log (their owners close them)."""

    async def __aenter__(self) -> AsyncTwoPhaseCoordinator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncTwoPhaseCoordinator({self.name!r}, participants={sorted(self._participants)})"

    # ------------------------------------------------------------------ the loop

    async def _log_call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.log.blocking:
            return await asyncio.to_thread(function, *args, **kwargs)
        return function(*args, **kwargs)

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        participant = self._participants[name]
        native = getattr(participant, f"a{method}", None)
        if native is not None:
            return await native(*args)
        return await asyncio.to_thread(getattr(participant, method), *args)

    async def _recover_one(
        self, txid: str, decision: Decision, names: tuple[str, ...]
    ) -> RecoveryResult:
        result, _ = await self._drive(self._recovery_driver(txid, decision, names), {})
        if self.events.active:
            self.events.emit(TwoPhaseRecovered(self.name, txid, decision.value, names))
        return RecoveryResult(txid, decision, names, result.unacknowledged)

    async def _prepare(
        self, txid: str, name: str, work: Any
    ) -> tuple[str, Vote | None, str | None, BaseException | None]:
        try:
            vote = Vote(await self._call(name, "prepare", txid, work))
        except Exception as exc:
            self._emit_vote(txid, name, None, describe(exc))
            return name, None, describe(exc), exc
        self._emit_vote(txid, name, vote, None)
        return name, vote, None, None

    async def _drive(
        self, driver: TwoPhaseDriver, work: dict[str, Any]
    ) -> tuple[TwoPhaseResult, BaseException | None]:
        clock = self.clock
        started = clock.now()
        cause: BaseException | None = None
        while True:
            action = driver.next_action(clock.now())
            if type(action) is Prepare:
                answers = await asyncio.gather(
                    *(
                        self._prepare(driver.txid, name, work.get(name))
                        for name in action.participants
                    )
                )
                cause = next((error for *_, error in answers if error is not None), None)
                driver.voted([(name, vote, error) for name, vote, error, _ in answers])
                if driver.decision is not None:
                    self._emit_decided(driver)
            elif type(action) is Record:
                stored = await self._log_call(
                    self.log.decide,
                    driver.txid,
                    action.decision,
                    coordinator=self.name,
                    participants=action.participants,
                )
                driver.recorded(stored)
                self._emit_decided(driver)
            elif type(action) is Deliver:
                outcomes = await asyncio.gather(
                    *(
                        self._deliver(driver.txid, name, action.decision, action.attempt)
                        for name in action.participants
                    )
                )
                driver.delivered(outcomes)
            elif type(action) is Pause:
                await clock.asleep(action.seconds)
            elif type(action) is Complete:
                await self._log_call(self.log.complete, [driver.txid])
                driver.completed()
            elif type(action) is Finished:
                if self.events.active and not action.result.unacknowledged:
                    self.events.emit(
                        TwoPhaseCompleted(
                            self.name,
                            driver.txid,
                            action.result.decision.value,
                            clock.now() - started,
                        )
                    )
                return action.result, cause

    async def _deliver(
        self, txid: str, name: str, decision: Decision, attempt: int
    ) -> tuple[str, str | None]:
        error: str | None
        if name not in self._participants:
            error = f"participant {name!r} is not registered with this coordinator"
        else:
            try:
                await self._call(name, "commit" if decision is Decision.COMMIT else "abort", txid)
                error = None
            except Exception as exc:
                error = describe(exc)
        self._emit_delivery(txid, name, decision, error, attempt)
        return name, error
