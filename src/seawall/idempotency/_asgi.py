"""ASGI middleware for the IETF ``Idempotency-Key`` HTTP header (Starlette, FastAPI, any ASGI app).

Follows draft-ietf-httpapi-idempotency-key-header: for the covered methods (POST
and PATCH by default) the first request with a key runs and its response (status,
headers, body) is stored; a retry with the same key and the same request gets that
response again (with ``Idempotent-Replayed: true``). Errors are
``application/problem+json``:

* 400 when the key is required and missing, or malformed;
* 409 while the first request with the key is still being processed (``Retry-After``);
* 422 when the key was used with a different request (method, path, query or body);
* 413 when the body is too large to fingerprint.

Responses with status 500 and above are not stored (the key is released so the
client's retry runs again) unless ``store_server_errors=True``. Pure ASGI: it needs
no web framework at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from seawall.errors import ConfigurationError
from seawall.idempotency._errors import (
    IdempotencyConflictError,
    IdempotencyKeyLostError,
    IdempotencyKeyMismatchError,
)
from seawall.idempotency._keys import MAX_KEY, Claim, IdempotencyKeys

__all__ = ["IdempotencyMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_logger = logging.getLogger("seawall.idempotency")

MISSING_TITLE = "Idempotency-Key is missing"
INVALID_TITLE = "Idempotency-Key is invalid"
CONFLICT_TITLE = "A request is outstanding for this Idempotency-Key"
MISMATCH_TITLE = "Idempotency-Key is already used"
TOO_LARGE_TITLE = "Request body is too large for Idempotency-Key processing"


def parse_key(raw: bytes) -> str | None:
    """The key from a header value (an RFC 8941 string, quotes optional), or None if malformed."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    if not text or len(text) > MAX_KEY or not all(" " <= char <= "~" for char in text):
        return None
    return text


def request_fingerprint(scope: Scope, body: bytes) -> str:
    """SHA-256 of the method, path, query string and body."""
    digest = hashlib.sha256()
    digest.update(str(scope.get("method", "")).encode())
    digest.update(b"\n")
    digest.update(str(scope.get("path", "")).encode())
    digest.update(b"\n")
    digest.update(bytes(scope.get("query_string", b"")))
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def encode_response(status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A stored response: one JSON line (status, headers) then the raw body."""
    head = json.dumps(
        {
            "status": status,
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
        },
        separators=(",", ":"),
    )
    return head.encode() + b"\n" + body


def decode_response(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and body of a stored response."""
    head, _, body = data.partition(b"\n")
    meta = json.loads(head)
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in meta["headers"]]
    return int(meta["status"]), headers, body


class IdempotencyMiddleware:
    """Makes POST/PATCH endpoints idempotent with the ``Idempotency-Key`` request header.

    ``keys`` stores the keys (any engine: memory, SQLite, PostgreSQL, Redis); its
    ``ttl`` is how long responses are replayed and its ``lease`` how long a request
    may run before a retry may take its key over (keep it above your slowest
    request). ``required=True`` answers 400 to covered requests without a key.
    ``scope_key(scope)`` returns a prefix that separates clients (e.g. the
    authenticated user), so two clients never share a key. Use with Starlette or
    FastAPI as ``app.add_middleware(IdempotencyMiddleware, keys=keys)``.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: IdempotencyKeys,
        *,
        methods: Iterable[str] = ("POST", "PATCH"),
        required: bool = False,
        header: str = "Idempotency-Key",
        scope_key: Callable[[Scope], str] | None = None,
        max_body_size: int = 1024 * 1024,
        max_response_size: int = 8 * 1024 * 1024,
        store_server_errors: bool = False,
        replay_header: str | None = "Idempotent-Replayed",
        problem_type: str = "about:blank",
    ) -> None:
        if not isinstance(keys, IdempotencyKeys):
            raise ConfigurationError(
                f"IdempotencyMiddleware(keys={keys!r}) needs an IdempotencyKeys object"
            )
        for field, value in (
            ("max_body_size", max_body_size),
            ("max_response_size", max_response_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"IdempotencyMiddleware({field}={value!r}) must be an int >= 1 (bytes)"
                )
        if not isinstance(header, str) or not header:
            raise ConfigurationError(f"IdempotencyMiddleware(header={header!r}) must be a name")
        self.app = app
        self.keys = keys.replace(codec="bytes")
        self.methods = frozenset(method.upper() for method in methods)
        self.required = bool(required)
        self.header = header.lower().encode("latin-1")
        self.scope_key = scope_key
        self.max_body_size = max_body_size
        self.max_response_size = max_response_size
        self.store_server_errors = bool(store_server_errors)
        self.replay_header = (
            None if replay_header is None else replay_header.lower().encode("latin-1")
        )
        self.problem_type = problem_type

    async def _problem(
        self,
        send: Send,
        status: int,
        title: str,
        detail: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        body = json.dumps(
            {"type": self.problem_type, "title": title, "status": status, "detail": detail}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _header(self, scope: Scope) -> bytes | None:
        wanted = self.header
        for name, value in scope.get("headers", ()):
            if name.lower() == wanted:
                return bytes(value)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope.get("type") != "http" or scope.get("method") not in self.methods:
            await self.app(scope, receive, send)
            return
        raw = self._header(scope)
        if raw is None:
            if self.required:
                await self._problem(
                    send,
                    400,
                    MISSING_TITLE,
                    "This operation is idempotent and requires an Idempotency-Key header.",
                )
                return
            await self.app(scope, receive, send)
            return
        key = parse_key(raw)
        if key is not None and self.scope_key is not None:
            key = f"{self.scope_key(scope)}:{key}"
            if len(key) > MAX_KEY:
                key = hashlib.sha256(key.encode()).hexdigest()
        if key is None:
            await self._problem(
                send,
                400,
                INVALID_TITLE,
                f"The Idempotency-Key must be a string of 1 to {MAX_KEY} printable ASCII "
                "characters, e.g. a UUID.",
            )
            return
        body_chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_size:
                await self._problem(
                    send,
                    413,
                    TOO_LARGE_TITLE,
                    f"The request body is over {self.max_body_size} bytes.",
                )
                return
            body_chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(body_chunks)
        fingerprint = request_fingerprint(scope, body)
        try:
            claim = await self.keys.aclaim(key, fingerprint)
        except IdempotencyConflictError as exc:
            retry_after = math.ceil(exc.retry_after or 0.0) or 1
            await self._problem(
                send,
                409,
                CONFLICT_TITLE,
                "A request with this Idempotency-Key is still being processed; retry later.",
                [(b"retry-after", str(retry_after).encode())],
            )
            return
        except IdempotencyKeyMismatchError:
            await self._problem(
                send,
                422,
                MISMATCH_TITLE,
                "This Idempotency-Key was used with a different request; it must not be reused "
                "across different payloads of this operation.",
            )
            return
        if claim.replayed:
            await self._replay(claim, send)
            return
        await self._run(scope, receive, send, claim, body)

    async def _replay(self, claim: Claim, send: Send) -> None:
        status, headers, body = decode_response(claim.response_data or b"")
        if self.replay_header is not None:
            headers.append((self.replay_header, b"true"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, claim: Claim, body: bytes
    ) -> None:
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, headers, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            elif message["type"] == "http.response.body":
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size <= self.max_response_size:
                    parts.append(chunk)
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await self.keys.arelease(claim)
            raise
        if (
            status is None
            or size > self.max_response_size
            or (status >= 500 and not self.store_server_errors)
        ):
            if size > self.max_response_size:
                _logger.warning(
                    "response for idempotency key %r is %d bytes, over max_response_size=%d: "
                    "not stored, a retry will run the request again",
                    claim.key,
                    size,
                    self.max_response_size,
                )
            await self.keys.arelease(claim)
            return
        try:
            await self.keys.acomplete(claim, encode_response(status, headers, b"".join(parts)))
        except IdempotencyKeyLostError:
            _logger.warning(
                "idempotency key %r was taken over before its response was stored; raise the "
                "lease above your slowest request",
                claim.key,
            )
