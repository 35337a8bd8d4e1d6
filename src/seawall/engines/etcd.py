"""The etcd engine: etcd's v3 JSON gateway over a small HTTP/1.1 client of its own.

``etcd://127.0.0.1:2379`` (several endpoints: ``etcd://h1:2379,h2:2379``, tried in turn
when one does not answer; ``?timeout=2.5`` sets the per-request timeout in seconds).
Requests are POSTs of JSON to ``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/grant``,
... with base64 keys and values, exactly as etcd's gRPC gateway documents them.

The client speaks HTTP/1.1 on keep-alive sockets (stdlib ``socket`` and asyncio
streams, nothing to install) and can **pipeline**: :meth:`EtcdEngine.pipeline` writes
several requests in one ``send`` and reads the replies in order, so a lease grant and
the transaction that uses it cost one network round trip. etcd's gateway answers
pipelined requests one after another, in order. Every wait is bounded by ``timeout``;
transport failures and etcd's "unavailable" answers (no leader, request timed out)
raise :class:`~seawall.errors.EngineUnavailableError`, other refusals
:class:`EtcdRequestError` carrying etcd's gRPC status ``code``.

Authentication and TLS are not supported yet: run the gateway on a trusted network
(loopback, a private interface) or behind a local TLS-terminating proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from seawall.engines._base import Engine, redact
from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "EtcdEngine",
    "EtcdRequestError",
    "LEASE_NOT_FOUND",
    "b64",
    "prefix_end",
    "unb64",
]

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0

LEASE_NOT_FOUND = 5
"""gRPC ``NotFound``: etcd's answer for a lease that does not exist (or expired)."""
_UNAVAILABLE_CODES = frozenset({4, 14})
"""gRPC ``DeadlineExceeded`` and ``Unavailable``: etcd could not serve the request now."""
_MAX_IDLE = 16

Request = tuple[str, bytes]
"""A gateway path and its JSON body, already encoded."""


def b64(value: str | bytes) -> str:
    """``value`` (text is UTF-8 encoded) as the base64 text the gateway expects."""
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def unb64(value: str | None) -> bytes:
    """The bytes behind a base64 field of a gateway reply (``b""`` when absent)."""
    return base64.b64decode(value) if value else b""


class EtcdRequestError(EngineError):
    """etcd refused one request; ``code`` is its gRPC status (5: not found, 9: exists, ...)."""

    def __init__(self, url: str, path: str, status: int, code: int, detail: str) -> None:
        super().__init__(f"etcd at {redact(url)} refused {path}: {detail} (code {code})", url=url)
        self.path = path
        self.status = status
        self.code = code
        self.detail = detail


class _Endpoint:
    __slots__ = ("head", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n".encode()


def _parse_url(url: str) -> tuple[list[_Endpoint], float | None]:
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise ConfigurationError(f"EtcdEngine needs an etcd:// URL, got {redact(url)!r}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            "etcd authentication is not supported yet: remove the user and password from "
            f"{redact(url)!r} and keep the gateway on a trusted network"
        )
    endpoints = []
    for item in (parts.netloc or "127.0.0.1").split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, ""
        host = host.strip("[]") or "127.0.0.1"
        try:
            number = int(port) if port else DEFAULT_PORT
        except ValueError:
            raise ConfigurationError(
                f"etcd endpoint {item!r} in {redact(url)!r} has a bad port; use host:port"
            ) from None
        endpoints.append(_Endpoint(host, number))
    timeout = None
    values = parse_qs(parts.query).get("timeout")
    if values:
        try:
            timeout = float(values[-1])
        except ValueError:
            raise ConfigurationError(
                f"etcd URL option timeout must be seconds, got {values[-1]!r}"
            ) from None
    return endpoints, timeout


def _encode(path: str, body: bytes, endpoint: _Endpoint) -> bytes:
    return b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        endpoint.head,
        len(body),
        body,
    )


class _ClosedError(Exception):
    """The server closed the connection before the reply was complete."""


class _ReplyReader:
    """Incremental HTTP/1.1 reply parsing over a byte buffer (shared by both flavours)."""

    @staticmethod
    def head(lines: list[bytes]) -> tuple[int, dict[bytes, bytes]]:
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise _ClosedError(f"not an HTTP reply: {lines[0][:60]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line[1]), headers


class _Connection:
    """One blocking keep-alive socket to an endpoint."""

    __slots__ = ("endpoint", "file", "sock")

    def __init__(self, endpoint: _Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def _line(self) -> bytes:
        line = self.file.readline(65537)
        if not line.endswith(b"\n"):
            raise _ClosedError("connection closed mid-reply")
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    def read_reply(self) -> tuple[int, bytes, bool]:
        """One reply: (status, body, keep the connection)."""
        lines = [self._line()]
        while lines[-1]:
            lines.append(self._line())
        status, headers = _ReplyReader.head(lines[:-1])
        length = headers.get(b"content-length")
        if length is not None:
            body = self.file.read(int(length))
            if len(body) != int(length):
                raise _ClosedError("connection closed mid-body")
        else:
            chunks = []
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():  # trailers up to the blank line
                        pass
                    break
                chunk = self.file.read(size + 2)
                if len(chunk) != size + 2:
                    raise _ClosedError("connection closed mid-chunk")
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        return status, body, headers.get(b"connection", b"").lower() != b"close"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class _AsyncConnection:
    """One asyncio keep-alive stream to an endpoint."""

    __slots__ = ("endpoint", "reader", "writer")

    def __init__(
        self, endpoint: _Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer

    async def _line(self) -> bytes:
        line = await self.reader.readline()
        if not line.endswith(b"\n"):
            raise _ClosedError("connection closed mid-reply")
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def read_reply(self) -> tuple[int, bytes, bool]:
        """Async :meth:`_Connection.read_reply`."""
        lines = [await self._line()]
        while lines[-1]:
            lines.append(await self._line())
        status, headers = _ReplyReader.head(lines[:-1])
        length = headers.get(b"content-length")
        try:
            if length is not None:
                body = await self.reader.readexactly(int(length))
            else:
                chunks = []
                while True:
                    size = int((await self._line()).split(b";", 1)[0], 16)
                    if size == 0:
                        while await self._line():
                            pass
                        break
                    chunks.append((await self.reader.readexactly(size + 2))[:-2])
                body = b"".join(chunks)
        except asyncio.IncompleteReadError as exc:
            raise _ClosedError("connection closed mid-body") from exc
        return status, body, headers.get(b"connection", b"").lower() != b"close"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class EtcdEngine(Engine):
    """etcd (v3 API) through its JSON gateway; ``timeout`` bounds every request (seconds).

    :meth:`call` sends one request, :meth:`pipeline` several in one round trip; both
    have async twins (``acall``, ``apipeline``). Connections are kept alive and reused;
    asyncio connections belong to one event loop at a time.
    """

    kind: ClassVar[str] = "etcd"

    def __init__(self, url: str = "etcd://127.0.0.1:2379", *, timeout: float | None = None) -> None:
        super().__init__(url)
        self.endpoints, url_timeout = _parse_url(url)
        chosen = timeout if timeout is not None else url_timeout
        chosen = DEFAULT_TIMEOUT if chosen is None else chosen
        if isinstance(chosen, bool) or not isinstance(chosen, int | float) or not chosen > 0:
            raise ConfigurationError(f"EtcdEngine timeout must be seconds > 0, got {chosen!r}")
        self.timeout = float(chosen)
        self._preferred = 0
        self._idle: deque[_Connection] = deque()
        self._async_idle: deque[_AsyncConnection] = deque()
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()

    # ------------------------------------------------------------------ requests

    @staticmethod
    def request(path: str, body: dict[str, Any]) -> Request:
        """A request for :meth:`pipeline`: ``path`` such as ``/v3/kv/range`` and its JSON body."""
        return path, json.dumps(body, separators=(",", ":")).encode()

    def _reply(self, path: str, status: int, body: bytes) -> dict[str, Any] | EtcdRequestError:
        try:
            decoded = json.loads(body) if body else {}
        except ValueError:
            decoded = {"error": body[:200].decode(errors="replace")}
        if status == 200 and "error" not in decoded:
            result = decoded.get("result", decoded)  # streaming replies wrap one result
            return result if isinstance(result, dict) else {}
        if "error" in decoded and isinstance(decoded.get("error"), dict):  # a stream's error
            decoded = decoded["error"]
        code = int(decoded.get("code", 0) or 0)
        detail = str(decoded.get("message") or decoded.get("error") or f"HTTP {status}")
        if code in _UNAVAILABLE_CODES or status in (502, 503, 504):
            raise EngineUnavailableError(
                f"etcd at {redact(self.url)} could not serve {path} now: {detail}; "
                "check that the cluster has a leader and a quorum of members",
                url=self.url,
            )
        return EtcdRequestError(self.url, path, status, code, detail)

    def _unavailable(self, error: BaseException) -> EngineUnavailableError:
        return EngineUnavailableError(
            f"etcd at {redact(self.url)} is unreachable ({type(error).__name__}: {error}); "
            "check that it runs, that the URL names its client port, and the timeout "
            f"({self.timeout}s)",
            url=self.url,
        )

    # ------------------------------------------------------------------ sync

    def _connect(self) -> _Connection:
        last: BaseException | None = None
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            try:
                connection = _Connection(self.endpoints[index], self.timeout)
            except OSError as exc:
                last = exc
                continue
            self._preferred = index
            return connection
        error = last if last is not None else OSError("no endpoint configured")
        raise self._unavailable(error) from last

    def pipeline(self, requests: Sequence[Request]) -> list[dict[str, Any] | EtcdRequestError]:
        """Send ``requests`` in one write and return each reply in order.

        A refused request's slot holds its :class:`EtcdRequestError`; an unreachable or
        unavailable etcd raises :class:`~seawall.errors.EngineUnavailableError`.
        """
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle = deque()
            self._pid = os.getpid()
        try:
            connection = self._idle.pop()
            reused = True
        except IndexError:
            connection = self._connect()
            reused = False
        while True:
            payload = b"".join(_encode(path, body, connection.endpoint) for path, body in requests)
            replies: list[tuple[int, bytes]] = []
            keep = True
            try:
                connection.sock.sendall(payload)
                for _ in requests:
                    status, body, keep_alive = connection.read_reply()
                    replies.append((status, body))
                    keep = keep and keep_alive
            except (OSError, _ClosedError, ValueError) as exc:
                connection.close()
                if reused and not replies and not isinstance(exc, TimeoutError):
                    # an idle connection the server dropped: once more on a fresh one
                    connection = self._connect()
                    reused = False
                    continue
                raise self._unavailable(exc) from exc
            except BaseException:  # interrupted mid round trip: the replies may be in flight
                connection.close()
                raise
            break
        if keep and len(self._idle) < _MAX_IDLE:
            self._idle.append(connection)
        else:
            connection.close()
        return [
            self._reply(path, status, body)
            for (path, _), (status, body) in zip(requests, replies, strict=True)
        ]

    def fanout(self, requests: Sequence[Request]) -> list[dict[str, Any] | EtcdRequestError]:
        """Send independent ``requests`` at once, each on its own connection; replies in order.

        etcd serves them concurrently, so the round trip costs about the slowest one.
        Use it only for requests whose order does not matter and that are safe to send
        again: when a reused connection turns out dropped, the set is resent once.
        """
        if len(requests) < 2:
            return self.pipeline(requests)
        if self._pid != os.getpid():
            self._idle = deque()
            self._pid = os.getpid()
        taken: list[_Connection] = []
        try:
            for _ in requests:
                taken.append(self._idle.pop() if self._idle else self._connect())
        except BaseException:
            for connection in taken:
                connection.close()
            raise
        replies: list[tuple[int, bytes]] = []
        keep = True
        try:
            for connection, (path, body) in zip(taken, requests, strict=True):
                connection.sock.sendall(_encode(path, body, connection.endpoint))
            for connection in taken:
                status, body, keep_alive = connection.read_reply()
                replies.append((status, body))
                keep = keep and keep_alive
        except (OSError, _ClosedError, ValueError) as exc:
            for connection in taken:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise self._unavailable(exc) from exc
            return self.pipeline(requests)  # fresh connections, in order
        except BaseException:
            for connection in taken:
                connection.close()
            raise
        for connection in taken:
            if keep and len(self._idle) < _MAX_IDLE:
                self._idle.append(connection)
            else:
                connection.close()
        return [
            self._reply(path, status, body)
            for (path, _), (status, body) in zip(requests, replies, strict=True)
        ]

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request; its reply, or :class:`EtcdRequestError` raised."""
        [reply] = self.pipeline([self.request(path, body)])
        if isinstance(reply, EtcdRequestError):
            raise reply
        return reply

    # ------------------------------------------------------------------ async

    async def _aconnect(self) -> _AsyncConnection:
        last: BaseException | None = None
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            endpoint = self.endpoints[index]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(endpoint.host, endpoint.port), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                last = exc
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._preferred = index
            return _AsyncConnection(endpoint, reader, writer)
        error = last if last is not None else OSError("no endpoint configured")
        raise self._unavailable(error) from last

    def _async_connections(self) -> deque[_AsyncConnection]:
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            for connection in self._async_idle:  # streams of a loop that is gone
                connection.close()
            self._async_idle = deque()
            self._async_loop = loop
        return self._async_idle

    async def _aexchange(
        self, connection: _AsyncConnection, requests: Sequence[Request]
    ) -> tuple[list[tuple[int, bytes]], bool]:
        payload = b"".join(_encode(path, body, connection.endpoint) for path, body in requests)
        connection.writer.write(payload)
        await connection.writer.drain()
        replies = []
        keep = True
        for _ in requests:
            status, body, keep_alive = await connection.read_reply()
            replies.append((status, body))
            keep = keep and keep_alive
        return replies, keep

    async def apipeline(
        self, requests: Sequence[Request]
    ) -> list[dict[str, Any] | EtcdRequestError]:
        """Async :meth:`pipeline`."""
        idle = self._async_connections()
        try:
            connection = idle.pop()
            reused = True
        except IndexError:
            connection = await self._aconnect()
            reused = False
        while True:
            try:
                replies, keep = await asyncio.wait_for(
                    self._aexchange(connection, requests), self.timeout
                )
            except (OSError, _ClosedError, ValueError, TimeoutError) as exc:
                connection.close()
                if reused and not isinstance(exc, TimeoutError):
                    connection = await self._aconnect()
                    reused = False
                    continue
                raise self._unavailable(exc) from exc
            except BaseException:  # cancelled mid round trip
                connection.close()
                raise
            break
        if keep and len(idle) < _MAX_IDLE:
            idle.append(connection)
        else:
            connection.close()
        return [
            self._reply(path, status, body)
            for (path, _), (status, body) in zip(requests, replies, strict=True)
        ]

    async def afanout(self, requests: Sequence[Request]) -> list[dict[str, Any] | EtcdRequestError]:
        """Async :meth:`fanout`: the requests run as concurrent single-request pipelines."""
        if len(requests) < 2:
            return await self.apipeline(requests)
        groups = await asyncio.gather(*(self.apipeline([request]) for request in requests))
        return [group[0] for group in groups]

    async def acall(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Async :meth:`call`."""
        [reply] = await self.apipeline([self.request(path, body)])
        if isinstance(reply, EtcdRequestError):
            raise reply
        return reply

    # ------------------------------------------------------------------ conveniences

    def get(self, key: str | bytes) -> bytes | None:
        """The value of ``key``, or ``None`` (a linearizable read)."""
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs")
        return unb64(kvs[0].get("value")) if kvs else None

    def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> int:
        """Write ``key``; returns the store revision of the write."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key: str | bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key starting with it); returns how many were deleted."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        return int(self.call("/v3/kv/deleterange", body).get("deleted", 0))

    def ping(self) -> None:
        """Raise :class:`~seawall.errors.EngineUnavailableError` unless etcd answers."""
        self.call("/v3/maintenance/status", {})

    def close(self) -> None:
        """Close the sync connections (async ones close in :meth:`aclose`)."""
        while self._idle:
            self._idle.pop().close()

    async def aclose(self) -> None:
        """Close every connection."""
        self.close()
        while self._async_idle:
            connection = self._async_idle.pop()
            connection.close()
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()


def prefix_end(key: str | bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``key``."""
    raw = bytearray(key.encode() if isinstance(key, str) else key)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\x00"  # every key
