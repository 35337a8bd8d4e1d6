"""The etcd semaphore store: holdings as leased keys, grants as compare-and-swap transactions.

Per name (percent-encoded in the keys, so names never nest), under ``<prefix>``:

* ``holders/<name>/<owner>``: one key per holding, value ``token:slot:exclusive``,
  attached to an etcd lease of the TTL: etcd deletes it when the lease runs out;
* ``intents/<name>/<owner>``: an exclusive waiter's intent, on a lease of ``intent_ttl``;
* ``fence/<name>``: the fencing counter; its ``version`` is the last token issued.

An acquire reads the three in one transaction (at revision ``R``), decides with the
same rule as every store (:func:`._core.choose`), and commits the grant with a
transaction that succeeds only if nothing changed that matters: the counter's version
is still the one read (so grants of a name are serialised), no holding and (for a
shared request) no intent appeared after ``R`` (``mod_revision < R + 1`` over each key
range). The new holding's lease grant is pipelined before that transaction. If another
grant won the race, the acquire reads again (up to eight times, then reports a refusal
so the caller backs off), so an acquire costs two round trips, plus one for the wait
hint when refused.

Holdings whose lease ran out stay visible until etcd's sweep (within 500 ms) and count
as held until then: a grant may be refused slightly late, never given twice. Leases are
whole seconds (see :mod:`seawall.coordination.lock.etcd`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from seawall.coordination.lock.etcd import (
    Steps,
    adrive,
    drive,
    first_kv,
    grant,
    keepalive,
    lease_seconds,
    new_lease_id,
    ok,
    revoke,
    time_to_live,
)
from seawall.coordination.semaphore._core import Holding, choose
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreGrant, SemaphoreState
from seawall.engines import connect
from seawall.engines.etcd import EtcdEngine, b64, prefix_end, unb64
from seawall.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "EtcdSemaphoreStore"]

DEFAULT_PREFIX = "seawall/semaphore"
_ATTEMPTS = 8
_HINT_LEASES = 16
"""At most this many holders' leases are asked for their time to live (the wait hint)."""


def _range(key: str, end: str) -> dict[str, Any]:
    return {"request_range": {"key": key, "range_end": end}}


def _parse(value: str | None) -> tuple[int, int, bool]:
    token, slot, exclusive = unb64(value).decode().split(":")
    return int(token), int(slot), exclusive == "1"


class EtcdSemaphoreStore:
    """Holdings as etcd keys with leases; ``engine`` is an EtcdEngine or an ``etcd://`` URL."""

    expires = True

    def __init__(
        self,
        engine: EtcdEngine | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_engine: bool = False,
    ) -> None:
        if isinstance(engine, str):
            opened = connect(engine)
            if not isinstance(opened, EtcdEngine):
                raise ConfigurationError(f"EtcdSemaphoreStore needs an etcd:// URL, got {engine!r}")
            engine = opened
            owns_engine = True
        if not isinstance(engine, EtcdEngine):
            raise ConfigurationError(f"EtcdSemaphoreStore needs an EtcdEngine, got {engine!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"EtcdSemaphoreStore prefix must be a non-empty string, got {prefix!r}"
            )
        self.engine = engine
        self.prefix = prefix.rstrip("/")
        self._owns_engine = owns_engine

    def keys(self, name: str) -> tuple[str, str, str]:
        """The key prefixes of ``name``'s holders and intents, and its counter key."""
        quoted = quote(name, safe="")
        return (
            f"{self.prefix}/holders/{quoted}/",
            f"{self.prefix}/intents/{quoted}/",
            f"{self.prefix}/fence/{quoted}",
        )

    # ------------------------------------------------------------------ reading

    def _read(self, name: str) -> Steps:
        """One transaction: holders, intents and counter at one revision."""
        holders, intents, fence = self.keys(name)
        body = {
            "success": [
                _range(b64(holders), b64(prefix_end(holders))),
                _range(b64(intents), b64(prefix_end(intents))),
                {"request_range": {"key": b64(fence)}},
            ]
        }
        [reply] = yield [EtcdEngine.request("/v3/kv/txn", body)]
        outcome = ok(reply)
        ranges = [part.get("response_range", {}) for part in outcome.get("responses", [])]
        revision = int(outcome["header"]["revision"])
        held: dict[str, tuple[int, int, bool, int]] = {}
        for kv in ranges[0].get("kvs", []):
            owner = unb64(kv["key"]).decode()[len(holders) :]
            token, slot, exclusive = _parse(kv.get("value"))
            held[owner] = (token, slot, exclusive, int(kv.get("lease", 0)))
        waiting = {
            unb64(kv["key"]).decode()[len(intents) :]: int(kv.get("lease", 0))
            for kv in ranges[1].get("kvs", [])
        }
        counter = first_kv(ranges[2])
        version = int(counter.get("version", 0)) if counter else 0
        return revision, held, waiting, version

    def _time_left(self, leases: list[int]) -> Steps:
        """Seconds left on each lease (whole seconds, rounded down; 0 when gone)."""
        if not leases:
            return []
        replies = yield [time_to_live(lease) for lease in leases]
        return [
            max(0, int(reply.get("TTL", 0))) if isinstance(reply, dict) else 0 for reply in replies
        ]

    # ------------------------------------------------------------------ operations (sans-I/O)

    def _acquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        exclusive: bool,
        intent_ttl: float,
    ) -> Steps:
        seconds = lease_seconds(ttl)
        holders, intents, fence = self.keys(name)
        for _ in range(_ATTEMPTS):
            revision, held, waiting, version = yield from self._read(name)
            view: dict[str, Holding] = {o: (h[1], h[2], 0.0) for o, h in held.items()}
            slot, _ = choose(view, waiting, owner, limit, exclusive, 0.0)
            if slot < 0:
                if exclusive and intent_ttl > 0:
                    yield from self._intend(intents + owner, waiting.get(owner), intent_ttl)
                return SemaphoreGrant(0, -1, (yield from self._hint(held, exclusive, waiting)))
            kept = held[owner][2] if owner in held else exclusive
            lease_id = new_lease_id()
            compare: list[dict[str, Any]] = [
                {"key": b64(fence), "target": "VERSION", "version": str(version)},
                {
                    "key": b64(holders),
                    "range_end": b64(prefix_end(holders)),
                    "target": "MOD",
                    "result": "LESS",
                    "mod_revision": str(revision + 1),
                },
            ]
            if not exclusive:
                compare.append(
                    {
                        "key": b64(intents),
                        "range_end": b64(prefix_end(intents)),
                        "target": "MOD",
                        "result": "LESS",
                        "mod_revision": str(revision + 1),
                    }
                )
            value = f"{version + 1}:{slot}:{1 if kept else 0}"
            txn = {
                "compare": compare,
                "success": [
                    {
                        "request_put": {
                            "key": b64(holders + owner),
                            "value": b64(value),
                            "lease": str(lease_id),
                        }
                    },
                    {"request_put": {"key": b64(fence), "value": ""}},
                    {"request_delete_range": {"key": b64(intents + owner)}},
                ],
            }
            granted, committed = yield [
                grant(lease_id, seconds),
                EtcdEngine.request("/v3/kv/txn", txn),
            ]
            ok(granted)
            if ok(committed).get("succeeded"):
                return SemaphoreGrant(version + 1, slot)
            yield [revoke(lease_id)]  # another grant won the race: read again
        return SemaphoreGrant(0, -1, None)  # kept losing races: the caller waits and retries

    def _intend(self, key: str, lease: int | None, intent_ttl: float) -> Steps:
        """Record or refresh an exclusive waiter's intent."""
        if lease:
            [reply] = yield [keepalive(lease)]
            if int(ok(reply).get("TTL", 0) or 0) > 0:
                return None
        fresh = new_lease_id()
        request = {"key": b64(key), "value": "", "lease": str(fresh)}
        yield [grant(fresh, lease_seconds(intent_ttl)), EtcdEngine.request("/v3/kv/put", request)]
        return None

    def _hint(
        self, held: dict[str, tuple[int, int, bool, int]], exclusive: bool, waiting: dict[str, int]
    ) -> Steps:
        if not exclusive and not any(h[2] for h in held.values()) and waiting:
            return None  # a writer's intent blocks: no holding's end to wait for
        leases = [h[3] for h in held.values() if h[3]][:_HINT_LEASES]
        left = yield from self._time_left(leases)
        if not left:
            return None
        return float(max(left) if exclusive else min(left))

    def _extend(self, name: str, owner: str, ttl: float) -> Steps:
        seconds = lease_seconds(ttl)
        holders, _, _ = self.keys(name)
        key = b64(holders + owner)
        [read] = yield [EtcdEngine.request("/v3/kv/range", {"key": key})]
        kv = first_kv(ok(read))
        if kv is None or not kv.get("lease"):
            return False
        lease = int(kv["lease"])
        alive, again = yield [keepalive(lease), EtcdEngine.request("/v3/kv/range", {"key": key})]
        granted = int(ok(alive).get("TTL", 0) or 0)
        now = first_kv(ok(again))
        if granted <= 0 or now is None or int(now.get("lease", 0)) != lease:
            return False
        if granted >= seconds:
            return True
        fresh = new_lease_id()  # a longer ttl than the lease has: move the holding
        move = {
            "compare": [{"key": key, "target": "LEASE", "lease": str(lease)}],
            "success": [
                {"request_put": {"key": key, "value": now.get("value", ""), "lease": str(fresh)}}
            ],
        }
        granted_reply, moved, _ = yield [
            grant(fresh, seconds),
            EtcdEngine.request("/v3/kv/txn", move),
            revoke(lease),  # nothing is left on it once the move succeeded
        ]
        ok(granted_reply)
        return bool(ok(moved).get("succeeded"))

    def _release(self, name: str, owner: str, *, withdraw: bool) -> Steps:
        holders, intents, _ = self.keys(name)
        success: list[dict[str, Any]] = [
            {"request_delete_range": {"key": b64(holders + owner), "prev_kv": True}}
        ]
        if withdraw:
            success.append({"request_delete_range": {"key": b64(intents + owner)}})
        [reply] = yield [EtcdEngine.request("/v3/kv/txn", {"success": success})]
        deleted = ok(reply)["responses"][0].get("response_delete_range", {})
        previous = deleted.get("prev_kvs") or []
        if not previous:
            return False
        lease = int(previous[0].get("lease", 0))
        if lease:
            yield [revoke(lease)]
        return True

    def _state(self, name: str) -> Steps:
        _, held, _, version = yield from self._read(name)
        owners = sorted(held, key=lambda owner: held[owner][1])
        left = yield from self._time_left([held[owner][3] for owner in owners])
        holders = tuple(
            HolderInfo(owner, held[owner][0], held[owner][1], held[owner][2], float(seconds))
            for owner, seconds in zip(owners, left, strict=True)
        )
        return SemaphoreState(name, holders, version)

    # ------------------------------------------------------------------ the protocol

    def acquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Read, decide, and commit the grant if nothing changed (see the module docstring)."""
        steps = self._acquire(name, owner, ttl, limit, exclusive, intent_ttl)
        result: SemaphoreGrant = drive(self.engine, steps)
        return result

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Keep ``owner``'s holding alive if it still has it."""
        return bool(drive(self.engine, self._extend(name, owner, ttl)))

    def release(self, name: str, owner: str) -> bool:
        """Delete ``owner``'s holding (and intent) and revoke its lease."""
        return bool(drive(self.engine, self._release(name, owner, withdraw=True)))

    def state(self, name: str) -> SemaphoreState:
        """The live holdings (by slot, seconds left rounded down) and the counter."""
        result: SemaphoreState = drive(self.engine, self._state(name))
        return result

    def force_release(self, name: str, owner: str) -> bool:
        """Delete ``owner``'s holding whoever asks."""
        return bool(drive(self.engine, self._release(name, owner, withdraw=False)))

    async def aacquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Async :meth:`acquire`."""
        steps = self._acquire(name, owner, ttl, limit, exclusive, intent_ttl)
        result: SemaphoreGrant = await adrive(self.engine, steps)
        return result

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return bool(await adrive(self.engine, self._extend(name, owner, ttl)))

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return bool(await adrive(self.engine, self._release(name, owner, withdraw=True)))

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        result: SemaphoreState = await adrive(self.engine, self._state(name))
        return result

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        return bool(await adrive(self.engine, self._release(name, owner, withdraw=False)))

    def close(self) -> None:
        """Close the engine if this store opened it."""
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"EtcdSemaphoreStore({self.engine!r}, prefix={self.prefix!r})"
