"""The idempotency keys users hold: claim a key, run once, complete or release it."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.codec import Codec, resolve_codec
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.idempotency._errors import (
    IdempotencyConflictError,
    IdempotencyKeyLostError,
    IdempotencyKeyMismatchError,
)
from seawall.idempotency._events import (
    IdempotencyKeyClaimed,
    IdempotencyKeyCompleted,
    IdempotencyKeyConflicted,
    IdempotencyKeyMismatched,
    IdempotencyKeyReleased,
    IdempotentReplayed,
)
from seawall.idempotency._model import ClaimResult, Decision, IdempotencyRecord, decide
from seawall.idempotency._store import IdempotencyStore

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["Claim", "IdempotencyKeys", "open_idempotency_store"]

T = TypeVar("T")
MAX_KEY = 255
DEFAULT_TTL = 86400.0
DEFAULT_LEASE = 60.0


def open_idempotency_store(engine: Engine | str, **options: Any) -> IdempotencyStore:
    """The idempotency store for ``engine`` (an :class:`Engine` or a URL), chosen by its kind.

    ``options`` go to the store (``table_prefix``/``schema`` on SQL, ``prefix`` on Redis,
    ``clock``, ``create``).
    """
    engine = connect(engine)
    if engine.kind == "sqlite":
        from seawall.idempotency.sqlite import SqliteIdempotencyStore

        return SqliteIdempotencyStore(engine, **options)
    if engine.kind == "postgres":
        from seawall.idempotency.postgres import PostgresIdempotencyStore

        return PostgresIdempotencyStore(engine, **options)
    if engine.kind == "memory":
        from seawall.idempotency.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore(engine, **options)
    if engine.kind == "redis":
        from seawall.idempotency.redis import RedisIdempotencyStore

        return RedisIdempotencyStore(engine, **options)
    raise UnsupportedEngineError(
        f"no idempotency store for the {engine.kind!r} engine ({engine!r}); use memory://, "
        "sqlite:///, postgresql:// or redis://"
    )


def _positive(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{owner}({name}={value!r}) must be seconds > 0")
    return float(value)


def check_key(key: object) -> str:
    """An idempotency key: a non-empty string of at most 255 characters."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
        raise ConfigurationError(
            f"idempotency key {key!r} must be a non-empty string of at most {MAX_KEY} "
            "characters (e.g. a UUID the client generated for this operation)"
        )
    return key


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a key: run the work, or (``replayed``) reuse the stored response.

    A fresh claim holds the key under a lease until :meth:`IdempotencyKeys.complete`
    or :meth:`IdempotencyKeys.release`.
    """

    key: str
    fingerprint: str
    token: str | None
    """This claim's token while it holds the key (``None`` when replayed)."""
    replayed: bool
    """True when the key was completed before: :attr:`response` is the stored one."""
    response_data: bytes | None
    """The stored response, encoded (when replayed)."""
    locked_until: float | None
    """When this claim's lease ends (store clock), unless replayed."""
    decoder: Callable[[bytes], Any] = field(repr=False, compare=False)

    @property
    def response(self) -> Any:
        """The stored response, decoded with the keys' codec (``None`` unless replayed)."""
        if self.response_data is None:
            return None
        return self.decoder(self.response_data)


class IdempotencyKeys:
    """Idempotency keys: run an operation once per key and replay its response afterwards.

    ``claim(key, fingerprint)`` either takes the key (run the operation, then
    ``complete`` with its response, or ``release`` if it failed) or returns the
    stored response of a completed key (``claim.replayed``). A key still in flight
    raises :class:`IdempotencyConflictError` (with ``retry_after``); a key first used
    with another ``fingerprint`` raises :class:`IdempotencyKeyMismatchError`.
    Completed keys are kept ``ttl`` seconds (default one day); an in-flight claim
    holds its key for ``lease`` seconds (default 60), after which a crashed holder's
    key can be claimed again by the same request. ``codec`` encodes responses
    (JSON by default). ``engine`` is an engine, a URL or an :class:`IdempotencyStore`.
    """

    def __init__(
        self,
        engine: Engine | str | IdempotencyStore,
        *,
        ttl: float = DEFAULT_TTL,
        lease: float = DEFAULT_LEASE,
        codec: Codec | str | None = None,
        clock: Clock | None = None,
        name: str = "idempotency",
        **store_options: Any,
    ) -> None:
        if isinstance(engine, IdempotencyStore):
            if store_options or clock is not None:
                raise ConfigurationError(
                    "store options and clock go to the store's constructor, not to "
                    "IdempotencyKeys, when you pass a store"
                )
            self.store: IdempotencyStore = engine
        else:
            self.store = open_idempotency_store(engine, clock=clock, **store_options)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"IdempotencyKeys(name={name!r}) must be a non-empty string")
        self.ttl = _positive("IdempotencyKeys", "ttl", ttl)
        self.lease = _positive("IdempotencyKeys", "lease", lease)
        if self.lease > self.ttl:
            raise ConfigurationError(
                f"IdempotencyKeys(lease={lease!r}) must not exceed ttl={ttl!r}: a claim would "
                "expire before its lease ends"
            )
        self.codec = resolve_codec(codec)
        self.name = name
        self.events = EventHub(parent=hub)

    def replace(self, **changes: Any) -> IdempotencyKeys:
        """A copy on the same store with some options changed (``ttl``, ``lease``, ``codec``, ``name``)."""
        options: dict[str, Any] = {
            "ttl": self.ttl,
            "lease": self.lease,
            "codec": self.codec,
            "name": self.name,
        }
        unknown = sorted(set(changes) - set(options))
        if unknown:
            raise ConfigurationError(
                f"IdempotencyKeys.replace() got unknown option(s) {unknown}; valid: {sorted(options)}"
            )
        options.update(changes)
        copy = IdempotencyKeys(self.store, **options)
        copy.events = self.events
        return copy

    # -- claiming ---------------------------------------------------------------------------

    def _outcome(self, key: str, fingerprint: str, result: ClaimResult) -> Claim:
        decision = decide(result, fingerprint)
        record = result.record
        active = self.events.active
        if decision is Decision.PROCEED:
            if active:
                self.events.emit(IdempotencyKeyClaimed(self.name, key))
            return Claim(
                key, fingerprint, record.token, False, None, record.locked_until, self.codec.decode
            )
        if decision is Decision.REPLAY:
            if active:
                self.events.emit(IdempotentReplayed(self.name, key))
            return Claim(key, fingerprint, None, True, record.response, None, self.codec.decode)
        if decision is Decision.MISMATCH:
            if active:
                self.events.emit(IdempotencyKeyMismatched(self.name, key))
            raise IdempotencyKeyMismatchError(
                key, stored_fingerprint=record.fingerprint, fingerprint=fingerprint
            )
        retry_after = max(0.0, (record.locked_until or result.now) - result.now)
        if active:
            self.events.emit(IdempotencyKeyConflicted(self.name, key, retry_after))
        raise IdempotencyConflictError(key, retry_after=retry_after)

    @staticmethod
    def _check(key: str, fingerprint: str) -> None:
        check_key(key)
        if not isinstance(fingerprint, str):
            raise ConfigurationError(
                f"fingerprint={fingerprint!r} must be a string (e.g. a hash of the request)"
            )

    def claim(
        self, key: str, fingerprint: str = "", *, transaction: Transaction | None = None
    ) -> Claim:
        """Take ``key`` for this request, or get the stored response of a completed one.

        Raises :class:`IdempotencyConflictError` while another request holds the key
        and :class:`IdempotencyKeyMismatchError` if it was used with another
        ``fingerprint``. ``transaction`` writes the claim in your transaction (then a
        rollback also undoes the claim).
        """
        self._check(key, fingerprint)
        token = os.urandom(12).hex()
        result = self.store.claim(key, fingerprint, token, self.lease, self.ttl, transaction)
        return self._outcome(key, fingerprint, result)

    async def aclaim(
        self, key: str, fingerprint: str = "", *, transaction: Transaction | None = None
    ) -> Claim:
        """Asyncio twin of :meth:`claim`."""
        self._check(key, fingerprint)
        token = os.urandom(12).hex()
        result = await self.store.aclaim(key, fingerprint, token, self.lease, self.ttl, transaction)
        return self._outcome(key, fingerprint, result)

    # -- settling ---------------------------------------------------------------------------

    @staticmethod
    def _token(claim: Claim, operation: str) -> str:
        if claim.token is None:
            raise ConfigurationError(
                f"cannot {operation} a replayed claim of key {claim.key!r}: it holds nothing"
            )
        return claim.token

    def complete(
        self, claim: Claim, response: Any = None, *, transaction: Transaction | None = None
    ) -> None:
        """Store ``response`` for the key, so later requests replay it.

        Pass the ``transaction`` the operation wrote in: its writes and the stored
        response then commit together. Raises :class:`IdempotencyKeyLostError` if the
        claim's lease ran out and another request took the key meanwhile.
        """
        data = self.codec.encode(response)
        token = self._token(claim, "complete")
        if not self.store.complete(claim.key, token, data, self.ttl, transaction):
            raise IdempotencyKeyLostError(claim.key)
        if self.events.active:
            self.events.emit(IdempotencyKeyCompleted(self.name, claim.key))

    async def acomplete(
        self, claim: Claim, response: Any = None, *, transaction: Transaction | None = None
    ) -> None:
        """Asyncio twin of :meth:`complete`."""
        data = self.codec.encode(response)
        token = self._token(claim, "complete")
        if not await self.store.acomplete(claim.key, token, data, self.ttl, transaction):
            raise IdempotencyKeyLostError(claim.key)
        if self.events.active:
            self.events.emit(IdempotencyKeyCompleted(self.name, claim.key))

    def release(self, claim: Claim, *, transaction: Transaction | None = None) -> bool:
        """Give the key up after a failure, so a retry runs afresh; False if it was lost."""
        released = self.store.release(claim.key, self._token(claim, "release"), transaction)
        if released and self.events.active:
            self.events.emit(IdempotencyKeyReleased(self.name, claim.key))
        return released

    async def arelease(self, claim: Claim, *, transaction: Transaction | None = None) -> bool:
        """Asyncio twin of :meth:`release`."""
        released = await self.store.arelease(claim.key, self._token(claim, "release"), transaction)
        if released and self.events.active:
            self.events.emit(IdempotencyKeyReleased(self.name, claim.key))
        return released

    def extend(self, claim: Claim, lease: float | None = None) -> bool:
        """Renew the claim's lease (default: the keys' ``lease``) during long work."""
        seconds = self.lease if lease is None else _positive("extend", "lease", lease)
        return self.store.extend(claim.key, self._token(claim, "extend"), seconds)

    async def aextend(self, claim: Claim, lease: float | None = None) -> bool:
        """Asyncio twin of :meth:`extend`."""
        seconds = self.lease if lease is None else _positive("aextend", "lease", lease)
        return await self.store.aextend(claim.key, self._token(claim, "extend"), seconds)

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        key: str,
        operation: Callable[[], T],
        *,
        fingerprint: str = "",
        transaction: Transaction | None = None,
    ) -> T:
        """Run ``operation()`` once for ``key`` and return its result; replay it afterwards.

        If it raises, the key is released (unless it runs in ``transaction``, whose
        rollback undoes the claim) and the error propagates.
        """
        claim = self.claim(key, fingerprint, transaction=transaction)
        if claim.replayed:
            replayed: T = claim.response
            return replayed
        try:
            result = operation()
        except BaseException:
            if transaction is None:
                self.release(claim)
            raise
        self.complete(claim, result, transaction=transaction)
        return result

    async def arun(
        self,
        key: str,
        operation: Callable[[], Awaitable[T]],
        *,
        fingerprint: str = "",
        transaction: Transaction | None = None,
    ) -> T:
        """Asyncio twin of :meth:`run`: awaits ``operation()``."""
        claim = await self.aclaim(key, fingerprint, transaction=transaction)
        if claim.replayed:
            replayed: T = claim.response
            return replayed
        try:
            result = await operation()
        except BaseException:
            if transaction is None:
                await self.arelease(claim)
            raise
        await self.acomplete(claim, result, transaction=transaction)
        return result

    # -- inspecting and cleaning ------------------------------------------------------------

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's stored record, or ``None`` if absent or expired."""
        return self.store.get(check_key(key))

    async def aget(self, key: str) -> IdempotencyRecord | None:
        """Asyncio twin of :meth:`get`."""
        return await self.store.aget(check_key(key))

    def purge_expired(self, *, limit: int = 10_000) -> int:
        """Delete up to ``limit`` expired keys; how many were deleted."""
        return self.store.purge_expired(limit)

    async def apurge_expired(self, *, limit: int = 10_000) -> int:
        """Asyncio twin of :meth:`purge_expired`."""
        return await self.store.apurge_expired(limit)

    def close(self) -> None:
        """Release the store's resources (not the engine)."""
        self.store.close()

    def __repr__(self) -> str:
        return f"IdempotencyKeys({self.store!r}, ttl={self.ttl!r}, lease={self.lease!r})"
