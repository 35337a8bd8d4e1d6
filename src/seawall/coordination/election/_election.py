"""Leader election over any expiring lock store: campaign, observe, resign, renew.

An :class:`Election` is one candidate in a named group. Its term is a lease on the lock
``seawall.election:<group>`` of the lock store it was given (memory, SQLite, PostgreSQL,
Redis, etcd, Redlock), so the term number is that lease's fencing token and strictly
increases across leaders. The owner token is ``<identity>#<random>``, which lets every
candidate observe who leads.

While it leads, a background renewal (a daemon thread after :meth:`Election.campaign`,
a task after :meth:`Election.acampaign`) extends the lease every ``renew_fraction`` of
the TTL. The leader is demoted, told through ``on_demoted`` and a
:class:`~seawall.coordination.LeaderDemoted` event, when a renewal is refused, when it
keeps failing, or when the term's local deadline (see
:class:`~seawall.coordination.Term`) passes while a renewal is still waiting for the
engine: the runner never waits on the engine past that deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.election._core import (
    DEFAULT_DRIFT_MARGIN,
    OWNER_SEPARATOR,
    Term,
    check_share,
    identity_of,
)
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
from seawall.coordination.lock._core import AcquireSchedule, check_name, check_seconds, check_ttl
from seawall.coordination.lock._store import LockStore, open_lock_store
from seawall.errors import ConfigurationError, EngineUnavailableError
from seawall.events import EventHub, hub

if TYPE_CHECKING:
    from seawall.engines import Engine

__all__ = ["DEFAULT_TTL", "LOCK_PREFIX", "Election", "LeaderInfo"]

DEFAULT_TTL = 10.0
DEFAULT_POLL_INTERVAL = 0.25
LOCK_PREFIX = "seawall.election:"
"""The lock name of group ``g`` is ``LOCK_PREFIX + g``."""
MAX_IDENTITY_BYTES = 256

_logger = logging.getLogger("seawall.coordination.election")

ElectedCallback = Callable[[Term], object]
DemotedCallback = Callable[[Term, str], object]


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """The group's current leader as the engine sees it."""

    group: str
    identity: str
    """The leader's identity (``Election(identity=...)``)."""
    term: int
    """The leader's term number (its lease's fencing token)."""
    expires_in: float
    """Seconds until its lease ends on the engine's clock unless it renews."""
    owner: str
    """The owner token of its lease."""


def _default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Outcome:
    """The result of a blocking call run in a helper thread, once it finished."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


def _call_in_thread(function: Callable[[], object], name: str) -> _Outcome:
    """Start ``function`` in a daemon thread; the caller waits on ``outcome.done``."""
    outcome = _Outcome()

    def run() -> None:
        try:
            outcome.value = function()
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


class Election:
    """One candidate for leadership of ``group``, on the lock store ``store`` names.

    ``ttl`` is the term's lease in seconds: a leader that stops renewing is replaced
    within it. ``campaign`` waits up to ``wait`` (default: until elected). ``identity``
    is what other candidates see as the leader (default ``host:pid``). ``on_elected(term)``
    and ``on_demoted(term, reason)`` are called when this candidate starts and stops
    leading. ``drift_margin`` is the share of the TTL the leader gives up to clock drift.
    """

    def __init__(
        self,
        group: str,
        ttl: float = DEFAULT_TTL,
        *,
        store: str | Engine | LockStore | None = None,
        identity: str | None = None,
        on_elected: ElectedCallback | None = None,
        on_demoted: DemotedCallback | None = None,
        wait: float = math.inf,
        drift_margin: float = DEFAULT_DRIFT_MARGIN,
        renew_fraction: float = 1 / 3,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(group, str) or not group:
            raise ConfigurationError(f"election group must be a non-empty string, got {group!r}")
        self.group = group
        self.lock_name = check_name(LOCK_PREFIX + group, "election group (with its prefix)")
        self.ttl = check_ttl(ttl)
        self.wait = check_seconds(wait, "wait", allow_infinite=True)
        self.drift_margin = check_share(
            drift_margin, "drift_margin", low=0.0, high=0.5, hint="0.01 gives up 1% of the ttl"
        )
        self.renew_fraction = check_share(
            renew_fraction,
            "renew_fraction",
            low=1e-9,
            high=1.0 - self.drift_margin,
            hint="1/3 renews three times per ttl",
        )
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        if self.poll_interval == 0.0:
            raise ConfigurationError("poll_interval must be > 0 seconds, got 0")
        chosen = _default_identity() if identity is None else identity
        if not isinstance(chosen, str) or not chosen:
            raise ConfigurationError(f"identity must be a non-empty string, got {identity!r}")
        if len(chosen.encode(errors="replace")) > MAX_IDENTITY_BYTES:
            raise ConfigurationError(
                f"identity must be at most {MAX_IDENTITY_BYTES} UTF-8 bytes, got {len(chosen)} "
                "characters; use a shorter name (host:pid, a pod name)"
            )
        check_name(chosen, "candidate identity")
        for callback, field in ((on_elected, "on_elected"), (on_demoted, "on_demoted")):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{field} must be callable or None, got {callback!r}")
        if store is None and clock is not SYSTEM_CLOCK:
            raise ConfigurationError(
                f"election {group!r} was given a custom clock but no store: the default memory "
                "store runs on the system clock; pass store=MemoryLockStore(clock=clock)"
            )
        self.identity = chosen
        self.on_elected = on_elected
        self.on_demoted = on_demoted
        self.clock = clock
        self.store, self._owns_store = open_lock_store(store)
        if not self.store.expires:
            if self._owns_store:
                self.store.close()
            raise ConfigurationError(
                f"election {group!r} needs a lock store whose leases expire by TTL; "
                f"{self.store!r} holds them for a session, so a cut-off leader could not know "
                "when another may be elected: use the lease table store of that engine"
            )
        self.events = EventHub(parent=hub)
        self._mutex = threading.Lock()
        self._term: Term | None = None
        self._campaigning = False
        self._stop: threading.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def term(self) -> Term | None:
        """This candidate's current term (check ``term.held`` before acting), or ``None``."""
        term = self._term
        return term if term is not None and not term.ended else None

    @property
    def is_leader(self) -> bool:
        """True while this candidate leads and its term's deadline has not passed."""
        term = self._term
        return term is not None and term.held

    def check(self) -> Term:
        """The current term if this candidate still leads, else :class:`LeadershipLostError`."""
        term = self._term
        if term is None:
            raise LeadershipLostError(self.group, 0, "this candidate does not lead")
        term.check()
        return term

    def _new_owner(self) -> str:
        return f"{self.identity}{OWNER_SEPARATOR}{os.urandom(12).hex()}"

    def _begin(self) -> Term | None:
        with self._mutex:
            if self._term is not None and self._term.held:
                return self._term
            if self._campaigning:
                raise ElectionError(
                    f"election {self.group!r}: a campaign of this candidate is already "
                    "running; campaign from one thread or task at a time"
                )
            self._campaigning = True
        return None

    def _give_up(
        self, wait: float, hint: float | None, error: EngineUnavailableError | None
    ) -> Exception:
        if error is not None:
            unavailable = EngineUnavailableError(
                f"election {self.group!r}: campaign gave up after {wait:.3f}s because the "
                f"engine did not answer: {error}",
                url=error.url,
            )
            unavailable.__cause__ = error
            return unavailable
        return ElectionTimeoutError(self.group, wait, retry_after=hint)

    def _won(self, owner: str, number: int, sent: float, attempts: int, waited: float) -> Term:
        term = Term(
            self.group,
            number,
            owner,
            self.ttl,
            sent_at=sent,
            clock=self.clock,
            drift_margin=self.drift_margin,
            renew_fraction=self.renew_fraction,
        )
        with self._mutex:
            self._term = term
            self._campaigning = False
        if self.events.active:
            self.events.emit(LeaderElected(self.group, number, self.identity, attempts, waited))
        if self.on_elected is not None:
            try:
                self.on_elected(term)
            except Exception:
                _logger.exception("on_elected callback of election %r failed", self.group)
        return term

    def _demote(self, term: Term, reason: str) -> bool:
        """End ``term`` once and tell the candidate: event and ``on_demoted``."""
        with self._mutex:
            if not term.end(reason):
                return False
            if self._term is term:
                self._term = None
        if self.events.active:
            self.events.emit(LeaderDemoted(self.group, term.number, term.identity, reason))
        if self.on_demoted is not None:
            try:
                self.on_demoted(term, reason)
            except Exception:
                _logger.exception("on_demoted callback of election %r failed", self.group)
        return True

    def _renewed(self, term: Term, sent: float) -> None:
        term.confirm(sent)
        if self.events.active:
            self.events.emit(
                LeadershipRenewed(self.group, term.number, term.trusted_until - self.clock.now())
            )

    def _renewal_failed(self, term: Term, error: Exception) -> float:
        now = self.clock.now()
        if self.events.active:
            self.events.emit(
                LeadershipRenewalFailed(
                    self.group, term.number, str(error), term.trusted_until - now
                )
            )
        return term.retry_delay(now)

    # ------------------------------------------------------------------ sync

    def campaign(self, wait: float | None = None) -> Term:
        """Become the leader, waiting up to ``wait`` seconds (default: the election's ``wait``).

        Returns the :class:`Term`; starts the renewal thread and calls ``on_elected``.
        Returns the current term at once if this candidate already leads. Raises
        :class:`ElectionTimeoutError` when another leader kept the lease for the whole
        wait, :class:`~seawall.errors.EngineUnavailableError` when the engine did not answer.
        """
        budget = self.wait if wait is None else check_seconds(wait, "wait", allow_infinite=True)
        current = self._begin()
        if current is not None:
            return current
        try:
            owner = self._new_owner()
            now = self.clock.now
            sent = started = now()
            try:
                token, hint = self.store.acquire(self.lock_name, owner, self.ttl)
                error: EngineUnavailableError | None = None
            except EngineUnavailableError as exc:
                token, hint, error = 0, None, exc
            attempts = 1
            if not token:
                schedule = AcquireSchedule(sent, budget, cap=self.poll_interval)
                while not token:
                    delay = schedule.next_delay(now(), hint)
                    if delay is None:
                        raise self._give_up(budget, hint, error)
                    self.clock.sleep(delay)
                    sent = now()
                    try:
                        token, hint = self.store.acquire(self.lock_name, owner, self.ttl)
                        error = None
                    except EngineUnavailableError as exc:
                        token, hint, error = 0, None, exc
                attempts = schedule.attempts
        except BaseException:
            with self._mutex:
                self._campaigning = False
            raise
        term = self._won(owner, token, sent, attempts, sent - started)
        stop = threading.Event()
        self._stop = stop
        threading.Thread(
            target=self._keep,
            args=(term, stop),
            name=f"seawall-election:{self.group}",
            daemon=True,
        ).start()
        return term

    def _keep(self, term: Term, stop: threading.Event) -> None:
        """Renew ``term`` on schedule; demote at its deadline, never waiting past it."""
        clock = self.clock
        while not term.ended:
            now = clock.now()
            if term.past_end(now):
                self._lapse(term, "its lease ran out without a confirmed renewal")
                return
            delay = term.wake_delay(now)
            if delay > 0.0:
                if stop.wait(delay):
                    return
                continue
            sent = clock.now()
            outcome = _call_in_thread(
                lambda: self.store.extend(self.lock_name, term.owner, self.ttl),
                f"seawall-election-renew:{self.group}",
            )
            if not outcome.done.wait(max(0.0, term.trusted_until - clock.now())):
                self._lapse(term, "a renewal was still waiting for the engine at the term's end")
                return
            if term.ended:
                return
            if outcome.error is not None:
                if not isinstance(outcome.error, Exception):  # pragma: no cover - interrupts
                    raise outcome.error
                retry = self._renewal_failed(term, outcome.error)
                if stop.wait(retry):
                    return
                continue
            if not outcome.value:
                self._demote(term, "a renewal was refused: the lease expired or was taken")
                return
            self._renewed(term, sent)

    def _lapse(self, term: Term, reason: str) -> None:
        """Demote at the deadline, then free the lease early if the engine still has it."""
        if self._demote(term, reason):
            with contextlib.suppress(Exception):
                self.store.release(self.lock_name, term.owner)

    def resign(self) -> bool:
        """Stop leading: end the term (``on_demoted`` is called), release the lease.

        Returns False when this candidate was not leading (nothing to do).
        """
        term = self._term
        if term is None or not self._demote(term, "resigned"):
            return False
        if self._stop is not None:
            self._stop.set()
        self.store.release(self.lock_name, term.owner)
        return True

    def leader(self) -> LeaderInfo | None:
        """The group's current leader (any process), or ``None``."""
        info = self.store.inspect(self.lock_name)
        if info is None:
            return None
        return LeaderInfo(
            self.group, identity_of(info.owner), info.fencing_token, info.expires_in, info.owner
        )

    def observe(self, interval: float | None = None) -> Iterator[LeaderInfo | None]:
        """Yield the current leader now and again each time it changes (polling ``interval``).

        An endless generator: break out of the loop when done.
        """
        pause = self.poll_interval if interval is None else check_seconds(interval, "interval")
        last: tuple[str, int] | bool | None = False
        while True:
            current = self.leader()
            key = (current.owner, current.term) if current is not None else None
            if key != last:
                last = key
                yield current
            self.clock.sleep(pause)

    def __enter__(self) -> Term:
        return self.campaign()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.resign()

    # ------------------------------------------------------------------ async

    async def acampaign(self, wait: float | None = None) -> Term:
        """Async :meth:`campaign`: waits with ``clock.asleep``, renews with a task."""
        budget = self.wait if wait is None else check_seconds(wait, "wait", allow_infinite=True)
        current = self._begin()
        if current is not None:
            return current
        try:
            owner = self._new_owner()
            now = self.clock.now
            sent = started = now()
            try:
                token, hint = await self.store.aacquire(self.lock_name, owner, self.ttl)
                error: EngineUnavailableError | None = None
            except EngineUnavailableError as exc:
                token, hint, error = 0, None, exc
            attempts = 1
            if not token:
                schedule = AcquireSchedule(sent, budget, cap=self.poll_interval)
                while not token:
                    delay = schedule.next_delay(now(), hint)
                    if delay is None:
                        raise self._give_up(budget, hint, error)
                    await self.clock.asleep(delay)
                    sent = now()
                    try:
                        token, hint = await self.store.aacquire(self.lock_name, owner, self.ttl)
                        error = None
                    except EngineUnavailableError as exc:
                        token, hint, error = 0, None, exc
                attempts = schedule.attempts
        except BaseException:
            with self._mutex:
                self._campaigning = False
            raise
        term = self._won(owner, token, sent, attempts, sent - started)
        self._task = asyncio.get_running_loop().create_task(
            self._akeep(term), name=f"seawall-election:{self.group}"
        )
        return term

    async def _akeep(self, term: Term) -> None:
        """Async :meth:`_keep`: the renewal races the term's deadline on the election's clock."""
        clock = self.clock
        while not term.ended:
            now = clock.now()
            if term.past_end(now):
                await self._alapse(term, "its lease ran out without a confirmed renewal")
                return
            delay = term.wake_delay(now)
            if delay > 0.0:
                await clock.asleep(delay)
                continue
            sent = clock.now()
            renewal = asyncio.ensure_future(
                self.store.aextend(self.lock_name, term.owner, self.ttl)
            )
            deadline = asyncio.ensure_future(clock.asleep(max(0.0, term.trusted_until - sent)))
            try:
                await asyncio.wait({renewal, deadline}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                deadline.cancel()
            if not renewal.done():
                renewal.cancel()
                await self._alapse(
                    term, "a renewal was still waiting for the engine at the term's end"
                )
                return
            if term.ended:
                return
            error = renewal.exception()
            if error is not None:
                if not isinstance(error, Exception):  # pragma: no cover - interrupts
                    raise error
                await clock.asleep(self._renewal_failed(term, error))
                continue
            if not renewal.result():
                self._demote(term, "a renewal was refused: the lease expired or was taken")
                return
            self._renewed(term, sent)

    async def _alapse(self, term: Term, reason: str) -> None:
        if self._demote(term, reason):
            with contextlib.suppress(Exception):
                await self.store.arelease(self.lock_name, term.owner)

    async def aresign(self) -> bool:
        """Async :meth:`resign`."""
        term = self._term
        if term is None or not self._demote(term, "resigned"):
            return False
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self._stop is not None:
            self._stop.set()
        await self.store.arelease(self.lock_name, term.owner)
        return True

    async def aleader(self) -> LeaderInfo | None:
        """Async :meth:`leader`."""
        info = await self.store.ainspect(self.lock_name)
        if info is None:
            return None
        return LeaderInfo(
            self.group, identity_of(info.owner), info.fencing_token, info.expires_in, info.owner
        )

    async def aobserve(self, interval: float | None = None) -> AsyncIterator[LeaderInfo | None]:
        """Async :meth:`observe`: an endless async iterator of leader changes."""
        pause = self.poll_interval if interval is None else check_seconds(interval, "interval")
        last: tuple[str, int] | bool | None = False
        while True:
            current = await self.aleader()
            key = (current.owner, current.term) if current is not None else None
            if key != last:
                last = key
                yield current
            await self.clock.asleep(pause)

    async def __aenter__(self) -> Term:
        return await self.acampaign()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aresign()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Resign if leading, stop the renewal, and close the store if this election opened it."""
        try:
            self.resign()
        finally:
            if self._stop is not None:
                self._stop.set()
            if self._owns_store:
                self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        try:
            await self.aresign()
        finally:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            if self._owns_store:
                await self.store.aclose()

    def __repr__(self) -> str:
        return f"Election({self.group!r}, identity={self.identity!r}, store={self.store!r})"
