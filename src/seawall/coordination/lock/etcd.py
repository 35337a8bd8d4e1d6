"""The etcd lock store: leases on etcd's clock, one transaction per acquire and per release.

A holding is the key ``<prefix>/holder/<name>`` whose value is the owner token and which
is attached to an etcd **lease** of the TTL (rounded up to whole seconds: etcd's
granularity). etcd deletes the key when the lease runs out on the leader's clock, so an
abandoned holding ends by itself. Next to it, ``<prefix>/fence/<name>`` counts grants:
the acquire transaction puts it (with ``prev_kv``) in the same atomic step that creates
the holder key, and the fencing token is the counter key's *version* after that put.

One acquire is one round trip: the lease request (a keepalive of a lease this store
already owns and no longer uses, or a grant of a new one with an ID chosen here) and
the transaction are **pipelined** in one write, and etcd applies them in order::

    txn  if create_revision(holder) == 0          # nobody holds it
         then put holder = owner (lease), put fence (prev_kv)
         else txn  if value(holder) == owner       # a retry whose reply was lost
                   then put holder = owner (lease), put fence (prev_kv)
                   else range holder                # refused: who holds it

A refusal asks the holder lease's time to live in a second round trip (the wait hint).
Release is one transaction, compare-and-set on the owner (``value(holder) == owner``
then delete). Extend pipelines a keepalive of the holding's lease with a read of the
holder key and succeeds only if the key still carries this owner *and* that lease.

**Why the tokens strictly increase.** The counter key is only ever written by grants and
never deleted (release, expiry and force_release delete the holder key only), so its
version counts the grants of that name: each grant is one committed Raft entry that
bumps it by exactly one, in the cluster's single serial order of writes. A later holder's
grant commits after the earlier holder's (its key had to be gone first), so its token is
higher, whichever member led the cluster at the time: committed entries survive leader
failover. Do not delete keys under ``<prefix>/fence/``.

**Leases, time and the Lock's view.** etcd measures a lease on its leader's clock from
when the grant or keepalive is applied, which is after the client sent it, so the
holder's own view (``Lease.expires_in``: the TTL from the moment the request was sent,
minus 1%) always ends first. etcd rounds TTLs up to whole seconds and to its minimum
(``1.5 x election timeout``, 2 s with default settings) and revokes expired leases in a
sweep every 500 ms, so a crashed holder's lock frees up to that much later than its TTL.
A keepalive restarts a lease at the TTL it was granted with; an ``extend`` asking for a
longer TTL moves the holder key to a new, longer lease in one transaction.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import Counter, deque
from collections.abc import Generator
from typing import Any

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._store import Acquisition, LeaseInfo
from seawall.engines import connect
from seawall.engines.etcd import (
    LEASE_NOT_FOUND,
    EtcdEngine,
    EtcdRequestError,
    Request,
    b64,
    unb64,
)
from seawall.errors import ConfigurationError

__all__ = [
    "DEFAULT_PREFIX",
    "EtcdLockStore",
    "Fanout",
    "Steps",
    "adrive",
    "drive",
    "lease_seconds",
]

DEFAULT_PREFIX = "seawall/lock"
_POOL_SIZE = 16
_MAX_HELD = 65536
_POOL_MARGIN = 0.5
"""A pooled lease is reused only while it has at least this many seconds left (local view)."""

Reply = dict[str, Any] | EtcdRequestError
Steps = Generator[list[Request], list[Reply], Any]
"""A sans-I/O operation: yields pipelines of requests, receives their replies, returns a result."""


class Fanout(list[Request]):
    """Requests a step yields that are independent: sent at once on separate connections."""


def drive(engine: EtcdEngine, steps: Steps) -> Any:
    """Run ``steps`` with blocking round trips; returns its result."""
    try:
        requests = next(steps)
        while True:
            send = engine.fanout if isinstance(requests, Fanout) else engine.pipeline
            requests = steps.send(send(requests))
    except StopIteration as done:
        return done.value


async def adrive(engine: EtcdEngine, steps: Steps) -> Any:
    """Run ``steps`` with awaited round trips; returns its result."""
    try:
        requests = next(steps)
        while True:
            send = engine.afanout if isinstance(requests, Fanout) else engine.apipeline
            requests = steps.send(await send(requests))
    except StopIteration as done:
        return done.value


def lease_seconds(ttl: float) -> int:
    """``ttl`` as whole seconds for an etcd lease, rounded up so the lease never ends early."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ConfigurationError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    if not math.isfinite(ttl):
        raise ConfigurationError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    return max(1, math.ceil(ttl - 1e-9))


def new_lease_id() -> int:
    """A random positive 63-bit lease ID (chosen here so a grant can be pipelined)."""
    return int.from_bytes(os.urandom(8), "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


def ok(reply: Reply) -> dict[str, Any]:
    """``reply`` if it is not an error, else raise it."""
    if isinstance(reply, EtcdRequestError):
        raise reply
    return reply


def grant(lease_id: int, seconds: int) -> Request:
    """A lease grant request with a chosen ID."""
    return EtcdEngine.request("/v3/lease/grant", {"ID": str(lease_id), "TTL": str(seconds)})


def keepalive(lease_id: int) -> Request:
    """A one-shot lease keepalive request (its reply has ``TTL`` 0 when the lease is gone)."""
    return EtcdEngine.request("/v3/lease/keepalive", {"ID": str(lease_id)})


def revoke(lease_id: int) -> Request:
    """A lease revoke request (deletes every key attached to the lease)."""
    return EtcdEngine.request("/v3/lease/revoke", {"ID": str(lease_id)})


def time_to_live(lease_id: int | str) -> Request:
    """A lease time-to-live request (``TTL`` -1 when the lease is gone)."""
    return EtcdEngine.request("/v3/lease/timetolive", {"ID": str(lease_id)})


def range_key(key: str) -> Request:
    """A linearizable read of one key (``key`` already base64)."""
    return EtcdEngine.request("/v3/kv/range", {"key": key})


def first_kv(reply: dict[str, Any]) -> dict[str, Any] | None:
    """The first key-value of a range reply, or ``None``."""
    kvs = reply.get("kvs")
    return kvs[0] if kvs else None


def fence_token(put_reply: dict[str, Any]) -> int:
    """The counter's version after a put with ``prev_kv``: the fencing token."""
    previous = put_reply.get("response_put", {}).get("prev_kv")
    return int(previous.get("version", 0)) + 1 if previous else 1


class EtcdLockStore:
    """Leases as etcd keys with etcd leases; ``engine`` is an EtcdEngine or an ``etcd://`` URL.

    ``prefix`` namespaces the keys (``<prefix>/holder/<name>``, ``<prefix>/fence/<name>``).
    ``clock`` only ages the leases this store keeps for reuse; every lease that guards a
    holding is timed by etcd.
    """

    expires = True

    def __init__(
        self,
        engine: EtcdEngine | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_engine: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if isinstance(engine, str):
            opened = connect(engine)
            if not isinstance(opened, EtcdEngine):
                raise ConfigurationError(f"EtcdLockStore needs an etcd:// URL, got {engine!r}")
            engine = opened
            owns_engine = True
        if not isinstance(engine, EtcdEngine):
            raise ConfigurationError(f"EtcdLockStore needs an EtcdEngine, got {engine!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"EtcdLockStore prefix must be a non-empty string, got {prefix!r}"
            )
        self.engine = engine
        self.prefix = prefix.rstrip("/")
        self.clock = clock
        self._owns_engine = owns_engine
        self._keys: dict[str, tuple[str, str]] = {}
        self._guard = threading.Lock()
        self._held: dict[str, tuple[str, int, int, float]] = {}
        """owner -> (name, lease ID, granted TTL, local time of the last grant/keepalive)"""
        self._pool: dict[int, deque[tuple[int, int, float]]] = {}
        """granted TTL -> idle leases: (lease ID, granted TTL, local time it runs out)"""
        self._granted_for: dict[int, int] = {}
        """TTL seconds asked -> TTL etcd granted (it raises short ones to its minimum)"""
        self._extending: Counter[str] = Counter()

    def keys(self, name: str) -> tuple[str, str]:
        """The etcd keys of ``name``: the holder key and its fencing counter."""
        return f"{self.prefix}/holder/{name}", f"{self.prefix}/fence/{name}"

    def _encoded(self, name: str) -> tuple[str, str]:
        encoded = self._keys.get(name)
        if encoded is None:
            holder, fence = self.keys(name)
            if len(self._keys) >= 4096:
                self._keys.clear()
            encoded = self._keys[name] = (b64(holder), b64(fence))
        return encoded

    # ------------------------------------------------------------------ lease bookkeeping

    def _take_lease(self, seconds: int, now: float) -> tuple[int, int] | None:
        """An idle lease etcd would grant for ``seconds`` that should still be alive, or ``None``."""
        with self._guard:
            idle = self._pool.get(self._granted_for.get(seconds, seconds))
            while idle:
                lease_id, granted, runs_out = idle.pop()
                if runs_out - now > _POOL_MARGIN:
                    return lease_id, granted
        return None

    def _give_lease(self, lease_id: int, granted: int, refreshed: float) -> None:
        with self._guard:
            idle = self._pool.setdefault(granted, deque())
            if len(idle) < _POOL_SIZE:
                idle.append((lease_id, granted, refreshed + granted))

    def _hold(self, owner: str, name: str, lease_id: int, granted: int, sent: float) -> None:
        with self._guard:
            if len(self._held) >= _MAX_HELD:  # holders that never released: forget the oldest
                del self._held[next(iter(self._held))]
            self._held[owner] = (name, lease_id, granted, sent)

    # ------------------------------------------------------------------ transactions

    @staticmethod
    def _acquire_txn(holder: str, fence: str, owner: str, lease_id: int) -> Request:
        value = b64(owner)
        lease = str(lease_id)
        grant_ops = [
            {"request_put": {"key": holder, "value": value, "lease": lease}},
            {"request_put": {"key": fence, "value": "", "prev_kv": True}},
        ]
        return EtcdEngine.request(
            "/v3/kv/txn",
            {
                "compare": [{"key": holder, "target": "CREATE", "create_revision": "0"}],
                "success": grant_ops,
                "failure": [
                    {
                        "request_txn": {
                            "compare": [{"key": holder, "target": "VALUE", "value": value}],
                            "success": grant_ops,
                            "failure": [{"request_range": {"key": holder}}],
                        }
                    }
                ],
            },
        )

    @staticmethod
    def _delete_if(holder: str, compare: list[dict[str, Any]]) -> dict[str, Any]:
        return {"compare": compare, "success": [{"request_delete_range": {"key": holder}}]}

    def _release_txn(self, holder: str, owner: str) -> Request:
        by_owner = [{"key": holder, "target": "VALUE", "value": b64(owner)}]
        return EtcdEngine.request("/v3/kv/txn", self._delete_if(holder, by_owner))

    # ------------------------------------------------------------------ operations (sans-I/O)

    def _acquire(self, name: str, owner: str, ttl: float) -> Steps:
        seconds = lease_seconds(ttl)
        holder, fence = self._encoded(name)
        for fresh in (False, True):
            sent = self.clock.now()
            pooled = None if fresh else self._take_lease(seconds, sent)
            lease_id = pooled[0] if pooled is not None else new_lease_id()
            txn = self._acquire_txn(holder, fence, owner, lease_id)
            # a keepalive of a live lease and the transaction commute: send them at once;
            # a grant must be applied before the transaction that attaches the key to it
            if pooled is not None:
                requests: list[Request] = Fanout([keepalive(lease_id), txn])
            else:
                requests = [grant(lease_id, seconds), txn]
            lease_reply, txn_reply = yield requests
            if isinstance(lease_reply, EtcdRequestError):  # a grant refused: undo, report
                if isinstance(txn_reply, dict) and self._granted(txn_reply):
                    yield [self._release_txn(holder, owner)]
                raise lease_reply
            granted = int(lease_reply.get("TTL", 0) or 0)
            if pooled is None and granted > 0:
                self._granted_for[seconds] = granted
            if isinstance(txn_reply, EtcdRequestError):
                if txn_reply.code == LEASE_NOT_FOUND and pooled is not None:
                    continue  # the idle lease had run out after all: grant a fresh one
                raise txn_reply
            outcome = txn_reply if txn_reply.get("succeeded") else self._nested(txn_reply)
            if outcome.get("succeeded") and granted <= 0:
                continue  # the idle lease ran out right after the key was put on it: again
            if outcome.get("succeeded"):
                self._hold(owner, name, lease_id, granted, sent)
                return Acquisition(fence_token(outcome["responses"][1]))
            if granted > 0:
                self._give_lease(lease_id, granted, sent)
            kv = first_kv(outcome["responses"][0].get("response_range", {}))
            if kv is None or not kv.get("lease"):
                return Acquisition(0, None)
            [left] = yield [time_to_live(kv["lease"])]
            remaining = int(ok(left).get("TTL", 0))
            return Acquisition(0, float(max(0, remaining)))
        raise AssertionError("unreachable: the second attempt grants a fresh lease")

    @staticmethod
    def _nested(reply: dict[str, Any]) -> dict[str, Any]:
        nested: dict[str, Any] = reply["responses"][0]["response_txn"]
        return nested

    def _granted(self, reply: dict[str, Any]) -> bool:
        return bool(reply.get("succeeded") or self._nested(reply).get("succeeded"))

    def _release(self, name: str, owner: str) -> Steps:
        holder, _ = self._encoded(name)
        with self._guard:
            held = self._held.pop(owner, None)
            if held is not None and held[0] != name:  # the owner holds another name
                self._held[owner] = held
                held = None
        [reply] = yield [self._release_txn(holder, owner)]
        if not ok(reply).get("succeeded"):
            return False
        if held is not None:
            # Only this owner's grants put its value on the key, on its lease: the lease is
            # free again. (Had another store moved the key to a longer lease, it revoked
            # this one; an idle lease that is gone is replaced at the next acquire.)
            with self._guard:
                reusable = not self._extending[owner]
            if reusable:
                self._give_lease(held[1], held[2], held[3])
        return True

    def _extend(self, name: str, owner: str, ttl: float) -> Steps:
        seconds = lease_seconds(ttl)
        holder, _ = self._encoded(name)
        value = b64(owner)
        with self._guard:
            self._extending[owner] += 1
            held = self._held.get(owner)
        try:
            if held is not None and held[0] == name and held[2] >= seconds:
                sent = self.clock.now()
                alive, read = yield [keepalive(held[1]), range_key(holder)]
                kv = first_kv(ok(read))
                if kv is None or kv.get("value") != value:
                    self._forget(owner)
                    return False
                if int(ok(alive).get("TTL", 0) or 0) > 0 and int(kv.get("lease", 0)) == held[1]:
                    self._hold(owner, name, held[1], held[2], sent)
                    return True
            else:
                [read] = yield [range_key(holder)]
                kv = first_kv(ok(read))
                if kv is None or kv.get("value") != value:
                    self._forget(owner)
                    return False
            # the owner holds it through a lease this store does not know, or a shorter one
            current = int(kv.get("lease", 0))
            if current:
                sent = self.clock.now()
                alive, read = yield [keepalive(current), range_key(holder)]
                granted = int(ok(alive).get("TTL", 0) or 0)
                kv = first_kv(ok(read))
                if kv is None or kv.get("value") != value or granted <= 0:
                    self._forget(owner)
                    return False
                if granted >= seconds and int(kv.get("lease", 0)) == current:
                    self._hold(owner, name, current, granted, sent)
                    return True
            sent = self.clock.now()
            fresh = new_lease_id()
            compare = [{"key": holder, "target": "VALUE", "value": value}]
            compare.append({"key": holder, "target": "LEASE", "lease": str(current)})
            move = EtcdEngine.request(
                "/v3/kv/txn",
                {
                    "compare": compare,
                    "success": [
                        {"request_put": {"key": holder, "value": value, "lease": str(fresh)}}
                    ],
                },
            )
            requests = [grant(fresh, seconds), move]
            if current:
                requests.append(revoke(current))  # no key is on it once the move succeeded
            granted_reply, moved, *_ = yield requests
            granted = int(ok(granted_reply).get("TTL", 0) or 0)
            if ok(moved).get("succeeded"):
                self._hold(owner, name, fresh, granted, sent)
                return True
            yield [revoke(fresh)]
            self._forget(owner)
            return False
        finally:
            with self._guard:
                self._extending[owner] -= 1
                if not self._extending[owner]:
                    del self._extending[owner]

    def _forget(self, owner: str) -> None:
        with self._guard:
            self._held.pop(owner, None)

    def _inspect(self, name: str) -> Steps:
        holder, fence = self._encoded(name)
        read, counter = yield [range_key(holder), range_key(fence)]
        kv = first_kv(ok(read))
        if kv is None:
            return None
        counter_kv = first_kv(ok(counter))
        token = int(counter_kv.get("version", 0)) if counter_kv else 0
        remaining = 0
        if kv.get("lease"):
            [left] = yield [time_to_live(kv["lease"])]
            remaining = int(ok(left).get("TTL", 0))
            if remaining < 0:  # ran out; etcd's sweep deletes the key within 500 ms
                return None
        return LeaseInfo(name, unb64(kv.get("value")).decode(), token, float(remaining))

    def _force_release(self, name: str) -> Steps:
        holder, _ = self._encoded(name)
        [read] = yield [range_key(holder)]
        kv = first_kv(ok(read))
        if kv is None:
            return False
        compare = [{"key": holder, "target": "MOD", "mod_revision": kv["mod_revision"]}]
        [reply] = yield [EtcdEngine.request("/v3/kv/txn", self._delete_if(holder, compare))]
        return bool(ok(reply).get("succeeded"))

    # ------------------------------------------------------------------ the protocol

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """One round trip: a lease (reused or granted) and the acquire transaction."""
        result: Acquisition = drive(self.engine, self._acquire(name, owner, ttl))
        return result

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Keep the holding's lease alive if ``owner`` still holds ``name`` on it."""
        return bool(drive(self.engine, self._extend(name, owner, ttl)))

    def release(self, name: str, owner: str) -> bool:
        """One transaction: delete the holder key if ``owner`` holds it."""
        return bool(drive(self.engine, self._release(name, owner)))

    def inspect(self, name: str) -> LeaseInfo | None:
        """The holder, its fencing token and its lease's remaining whole seconds."""
        result: LeaseInfo | None = drive(self.engine, self._inspect(name))
        return result

    def force_release(self, name: str) -> bool:
        """Delete the holder key whoever holds it; the fencing counter is kept."""
        return bool(drive(self.engine, self._force_release(name)))

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`."""
        result: Acquisition = await adrive(self.engine, self._acquire(name, owner, ttl))
        return result

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return bool(await adrive(self.engine, self._extend(name, owner, ttl)))

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return bool(await adrive(self.engine, self._release(name, owner)))

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        result: LeaseInfo | None = await adrive(self.engine, self._inspect(name))
        return result

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        return bool(await adrive(self.engine, self._force_release(name)))

    def _idle_revocations(self) -> list[Request]:
        with self._guard:
            leases = [entry[0] for idle in self._pool.values() for entry in idle]
            self._pool.clear()
        return [revoke(lease_id) for lease_id in leases]

    def close(self) -> None:
        """Revoke the idle leases kept for reuse, then close the engine if this store opened it."""
        requests = self._idle_revocations()
        if requests:
            with contextlib.suppress(Exception):  # idle leases also run out by themselves
                self.engine.pipeline(requests)
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        requests = self._idle_revocations()
        if requests:
            with contextlib.suppress(Exception):
                await self.engine.apipeline(requests)
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"EtcdLockStore({self.engine!r}, prefix={self.prefix!r})"
