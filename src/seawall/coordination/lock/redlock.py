"""Redlock: one lock across several independent Redis servers, with fencing tokens.

The algorithm (Salvatore Sanfilippo's Redlock): try the lease on every one of N
independent servers (no replication between them) with the same owner token and TTL;
the lock is granted when a majority (``N // 2 + 1``) said yes and the time spent is
still well inside the TTL. Otherwise every partial grant is released. Release and
extend go to every server and need a majority.

**Fencing tokens across independent servers.** Each server keeps its own counter,
incremented by its acquire script. Taking the maximum of the granted counters is *not*
enough: counters drift apart when a server misses grants, so a later majority can
answer with smaller numbers than an earlier one. This store adds a second step: after
a majority granted, every granting server whose counter is below the maximum ``t`` is
raised to ``t`` (while the holder's key is still there), and the grant stands only if
a majority now holds ``t``. Any two majorities share a server; on that server the
later holder's ``SET NX`` came after the earlier holder's key was gone, hence after
its counter reached the earlier token, so the later ``INCR`` yields more. Tokens
strictly increase as long as no server loses acknowledged writes.

**Kleppmann's critique, and why fencing is still required.** Redlock's safety rests
on timing: bounded network delay, bounded process pauses and bounded clock drift
between the servers (a server whose clock jumps forward expires a key early; one
that restarts without persistence forgets it). Martin Kleppmann ("How to do
distributed locking", 2016) shows that a holder paused by GC past its TTL keeps
acting as the holder after another client acquired the lock, and no lock service can
prevent that by itself. The defence is on the resource: it must refuse writes that
carry a token older than one it has seen (:func:`~seawall.coordination.sql_fence`,
:class:`~seawall.coordination.FenceGuard`). Use Redlock for efficiency (avoiding
duplicate work) and fence every write that correctness depends on; for a lock that
must be correct on its own, use PostgreSQL (or etcd). Run the servers with
``appendonly yes`` and ``appendfsync always`` if a restarted server must not forget
grants and counters, or delay its restart by the longest TTL.

Sync calls visit the servers one after another; async calls ask them concurrently.
Each server is bounded by ``instance_timeout`` so a dead one costs little of the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._core import DRIFT_FACTOR
from seawall.coordination.lock._store import Acquisition, LeaseInfo
from seawall.coordination.lock.redis import DEFAULT_PREFIX, RedisLockStore
from seawall.engines.redis import RedisEngine
from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError

__all__ = ["DEFAULT_INSTANCE_TIMEOUT", "RedlockStore"]

DEFAULT_INSTANCE_TIMEOUT = 0.25


class RedlockStore:
    """A lock store over N independent Redis servers (``instances``: URLs, engines or stores).

    ``quorum`` is ``N // 2 + 1``. ``instance_timeout`` (seconds) is the connect and
    socket timeout of the servers opened here from URLs. ``clock`` measures how much of
    the TTL an acquire used.
    """

    expires = True

    def __init__(
        self,
        instances: Sequence[str | RedisEngine | RedisLockStore],
        *,
        prefix: str = DEFAULT_PREFIX,
        instance_timeout: float = DEFAULT_INSTANCE_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if isinstance(instances, str | bytes) or not isinstance(instances, Sequence):
            raise ConfigurationError(
                f"RedlockStore needs a list of independent Redis servers, got {instances!r}"
            )
        if len(instances) < 1:
            raise ConfigurationError(
                "RedlockStore needs at least one Redis server (three or five for fault tolerance)"
            )
        if (
            isinstance(instance_timeout, bool)
            or not isinstance(instance_timeout, int | float)
            or not instance_timeout > 0
        ):
            raise ConfigurationError(
                f"RedlockStore instance_timeout must be seconds > 0, got {instance_timeout!r}"
            )
        self.instance_timeout = float(instance_timeout)
        self.clock = clock
        self.stores: list[RedisLockStore] = []
        for instance in instances:
            if isinstance(instance, RedisLockStore):
                self.stores.append(instance)
            elif isinstance(instance, RedisEngine):
                self.stores.append(RedisLockStore(instance, prefix=prefix))
            elif isinstance(instance, str):
                engine = RedisEngine(
                    instance,
                    socket_timeout=self.instance_timeout,
                    socket_connect_timeout=self.instance_timeout,
                )
                self.stores.append(RedisLockStore(engine, prefix=prefix, owns_engine=True))
            else:
                raise ConfigurationError(
                    "RedlockStore instances must be redis:// URLs, RedisEngine or "
                    f"RedisLockStore objects, got {instance!r}"
                )
        self.quorum = len(self.stores) // 2 + 1

    # ------------------------------------------------------------------ decisions

    def _in_time(self, started: float, ttl: float) -> bool:
        return self.clock.now() - started < ttl * (1.0 - DRIFT_FACTOR)

    def _unavailable(
        self, errors: list[BaseException], operation: str = "acquire"
    ) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"Redlock {operation}: {len(errors)} of {len(self.stores)} Redis servers failed, "
            f"so no majority of {self.quorum} could answer (first error: {errors[0]}); "
            "check that the servers run and the URLs are right"
        )

    @staticmethod
    def _hint(hints: list[float | None]) -> float | None:
        known = sorted(hint for hint in hints if hint is not None)
        return known[len(known) // 2] if known else None

    def _tally(self, replies: list[Any], operation: str) -> bool:
        """Majority said yes: True; majority impossible by refusals: False; else raise."""
        granted = sum(1 for reply in replies if reply is True)
        if granted >= self.quorum:
            return True
        refused = sum(1 for reply in replies if reply is False)
        if refused > len(self.stores) - self.quorum:
            return False
        errors = [reply for reply in replies if isinstance(reply, BaseException)]
        raise self._unavailable(errors, operation) from errors[0]

    # ------------------------------------------------------------------ sync

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Take the lease on a majority within the TTL, then align their fencing counters."""
        started = self.clock.now()
        grants: list[tuple[RedisLockStore, int]] = []
        hints: list[float | None] = []
        errors: list[BaseException] = []
        for store in self.stores:
            try:
                token, hint = store.acquire(name, owner, ttl)
            except EngineError as exc:
                errors.append(exc)
                continue
            if token:
                grants.append((store, token))
            else:
                hints.append(hint)
        if len(grants) >= self.quorum:
            fence = max(token for _, token in grants)
            confirmed = sum(1 for _, token in grants if token == fence)
            for store, token in grants:
                if token < fence:
                    try:
                        confirmed += store.raise_fence(name, owner, fence)
                    except EngineError as exc:
                        errors.append(exc)
            if confirmed >= self.quorum and self._in_time(started, ttl):
                return Acquisition(fence)
        for store, _ in grants:
            with contextlib.suppress(EngineError):  # if it fails, the key expires by itself
                store.release(name, owner)
        if len(errors) > len(self.stores) - self.quorum:  # outages, not a holder, blocked it
            raise self._unavailable(errors) from errors[0]
        return Acquisition(0, self._hint(hints))

    def _each(self, method: str, *args: Any) -> list[Any]:
        replies: list[Any] = []
        for store in self.stores:
            try:
                replies.append(getattr(store, method)(*args))
            except EngineError as exc:
                replies.append(exc)
        return replies

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Extend on every server; True when a majority extended within the TTL."""
        started = self.clock.now()
        return self._tally(self._each("extend", name, owner, ttl), "extend") and self._in_time(
            started, ttl
        )

    def release(self, name: str, owner: str) -> bool:
        """Release on every server; True when a majority still held the lease."""
        return self._tally(self._each("release", name, owner), "release")

    def inspect(self, name: str) -> LeaseInfo | None:
        """The owner holding the lease on a majority, or ``None``."""
        return self._majority_holder(name, self._each("inspect", name))

    def _majority_holder(self, name: str, replies: list[Any]) -> LeaseInfo | None:
        by_owner: dict[str, list[LeaseInfo]] = {}
        for reply in replies:
            if isinstance(reply, LeaseInfo):
                by_owner.setdefault(reply.owner, []).append(reply)
        for owner, infos in by_owner.items():
            if len(infos) >= self.quorum:
                return LeaseInfo(
                    name,
                    owner,
                    max(info.fencing_token for info in infos),
                    min(info.expires_in for info in infos),
                )
        if all(isinstance(reply, BaseException) for reply in replies):
            errors = [reply for reply in replies if isinstance(reply, BaseException)]
            raise self._unavailable(errors, "inspect") from errors[0]
        return None

    def force_release(self, name: str) -> bool:
        """Delete the lease on every server that answers; True if any had one."""
        return any(reply is True for reply in self._each("force_release", name))

    # ------------------------------------------------------------------ async

    async def _aeach(self, method: str, *args: Any) -> list[Any]:
        calls = [getattr(store, method)(*args) for store in self.stores]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, EngineError):
                raise reply
        return list(replies)

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`: asks every server at once."""
        started = self.clock.now()
        replies = await self._aeach("aacquire", name, owner, ttl)
        grants = [
            (store, reply.fencing_token)
            for store, reply in zip(self.stores, replies, strict=True)
            if isinstance(reply, Acquisition) and reply.fencing_token
        ]
        errors = [reply for reply in replies if isinstance(reply, BaseException)]
        if len(grants) >= self.quorum:
            fence = max(token for _, token in grants)
            confirmed = sum(1 for _, token in grants if token == fence)
            raised = await asyncio.gather(
                *(
                    store.araise_fence(name, owner, fence)
                    for store, token in grants
                    if token < fence
                ),
                return_exceptions=True,
            )
            confirmed += sum(1 for reply in raised if reply is True)
            if confirmed >= self.quorum and self._in_time(started, ttl):
                return Acquisition(fence)
        await asyncio.gather(
            *(store.arelease(name, owner) for store, _ in grants), return_exceptions=True
        )
        if len(errors) > len(self.stores) - self.quorum:  # outages, not a holder, blocked it
            raise self._unavailable(errors) from errors[0]
        hints = [
            reply.holder_expires_in
            for reply in replies
            if isinstance(reply, Acquisition) and not reply.fencing_token
        ]
        return Acquisition(0, self._hint(hints))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        started = self.clock.now()
        replies = await self._aeach("aextend", name, owner, ttl)
        return self._tally(replies, "extend") and self._in_time(started, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return self._tally(await self._aeach("arelease", name, owner), "release")

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return self._majority_holder(name, await self._aeach("ainspect", name))

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        return any(reply is True for reply in await self._aeach("aforce_release", name))

    def close(self) -> None:
        """Close every server's connections opened here."""
        for store in self.stores:
            store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        for store in self.stores:
            await store.aclose()

    def __repr__(self) -> str:
        return f"RedlockStore({len(self.stores)} servers, quorum={self.quorum})"
