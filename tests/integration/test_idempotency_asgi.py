"""The Idempotency-Key ASGI middleware in a Starlette app, driven through httpx.

Covers the IETF draft's behaviours: replay of the first response, 400 for a missing
(required) or malformed key, 409 while the first request is in flight, 422 when the
key is reused for another payload; plus what is not stored (server errors, crashes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import seawall
from seawall.errors import ConfigurationError
from seawall.idempotency import IdempotencyKeys, IdempotencyMiddleware
from seawall.idempotency._asgi import Message, Receive, Scope, Send


class Shop:
    """A tiny app whose endpoints count their calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def create_order(self, request: Request) -> Response:
        self.calls += 1
        payload = await request.json()
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return JSONResponse(
            {"order": self.calls, "item": payload["item"]},
            status_code=201,
            headers={"location": f"/orders/{self.calls}"},
        )

    async def list_orders(self, request: Request) -> Response:
        self.calls += 1
        return JSONResponse({"orders": self.calls})

    async def broken(self, request: Request) -> Response:
        self.calls += 1
        return JSONResponse({"error": "database down"}, status_code=503)

    async def stream(self, request: Request) -> Response:
        self.calls += 1

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", f"call {self.calls}".encode()):
                yield part

        return StreamingResponse(chunks(), media_type="text/plain")

    def app(self, keys: IdempotencyKeys, **options: Any) -> Starlette:
        app = Starlette(
            routes=[
                Route("/orders", self.create_order, methods=["POST"]),
                Route("/orders", self.list_orders, methods=["GET"]),
                Route("/broken", self.broken, methods=["POST"]),
                Route("/stream", self.stream, methods=["POST"]),
            ]
        )
        app.add_middleware(IdempotencyMiddleware, keys=keys, **options)
        return app


@pytest.fixture
def keys() -> IdempotencyKeys:
    return IdempotencyKeys(seawall.connect("memory://"))


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_the_first_response_is_replayed_with_its_status_headers_and_body(
    keys: IdempotencyKeys,
) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        first = await http.post("/orders", json={"item": "book"}, headers=key("k-1"))
        again = await http.post("/orders", json={"item": "book"}, headers=key("k-1"))
        quoted = await http.post("/orders", json={"item": "book"}, headers=key('"k-1"'))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"order": 1, "item": "book"}
    assert again.headers["location"] == "/orders/1"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert quoted.json() == first.json()  # the header is a structured-field string
    assert shop.calls == 1


async def test_without_a_key_requests_pass_through_unless_required(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        assert (await http.post("/orders", json={"item": "a"})).status_code == 201
        assert (await http.post("/orders", json={"item": "a"})).status_code == 201
    assert shop.calls == 2
    async with client(shop.app(keys, required=True)) as http:
        missing = await http.post("/orders", json={"item": "a"})
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "Idempotency-Key is missing"
    assert shop.calls == 2


async def test_only_the_covered_methods_are_affected(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys, required=True)) as http:
        assert (await http.get("/orders", headers=key("k"))).json() == {"orders": 1}
        assert (await http.get("/orders", headers=key("k"))).json() == {"orders": 2}


async def test_a_malformed_key_is_a_bad_request(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        too_long = await http.post("/orders", json={"item": "a"}, headers=key("x" * 300))
        empty = await http.post("/orders", json={"item": "a"}, headers=key('""'))
    assert too_long.status_code == empty.status_code == 400
    assert too_long.json()["title"] == "Idempotency-Key is invalid"
    assert shop.calls == 0


async def test_reusing_a_key_for_another_payload_is_unprocessable(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        await http.post("/orders", json={"item": "book"}, headers=key("k"))
        other = await http.post("/orders", json={"item": "lamp"}, headers=key("k"))
        other_path = await http.post("/stream", json={"item": "book"}, headers=key("k"))
    assert other.status_code == other_path.status_code == 422
    problem = other.json()
    assert problem["title"] == "Idempotency-Key is already used"
    assert problem["status"] == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert shop.calls == 1


async def test_a_retry_while_the_first_request_runs_is_a_conflict(keys: IdempotencyKeys) -> None:
    shop = Shop()
    shop.gate = asyncio.Event()
    async with client(shop.app(keys)) as http:
        first = asyncio.create_task(http.post("/orders", json={"item": "a"}, headers=key("k")))
        await asyncio.wait_for(shop.entered.wait(), 10.0)
        conflict = await http.post("/orders", json={"item": "a"}, headers=key("k"))
        shop.gate.set()
        done = await asyncio.wait_for(first, 10.0)
        replay = await http.post("/orders", json={"item": "a"}, headers=key("k"))
    assert conflict.status_code == 409
    assert conflict.json()["title"] == "A request is outstanding for this Idempotency-Key"
    assert int(conflict.headers["retry-after"]) >= 1
    assert done.status_code == replay.status_code == 201
    assert replay.json() == done.json()
    assert shop.calls == 1


async def test_server_errors_are_not_stored_so_a_retry_runs(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        assert (await http.post("/broken", headers=key("k"))).status_code == 503
        assert (await http.post("/broken", headers=key("k"))).status_code == 503
    assert shop.calls == 2
    async with client(shop.app(keys, store_server_errors=True)) as http:
        await http.post("/broken", headers=key("k2"))
        replay = await http.post("/broken", headers=key("k2"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert shop.calls == 3


async def test_streamed_responses_are_replayed_whole(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys)) as http:
        first = await http.post("/stream", content=b"x", headers=key("k"))
        again = await http.post("/stream", content=b"x", headers=key("k"))
    assert first.text == again.text == "one,two,call 1"
    assert again.headers["content-type"].startswith("text/plain")


async def test_scope_key_separates_clients(keys: IdempotencyKeys) -> None:
    shop = Shop()

    def user(scope: Scope) -> str:
        headers = dict(scope["headers"])
        return headers.get(b"x-user", b"anonymous").decode()

    async with client(shop.app(keys, scope_key=user)) as http:
        alice = await http.post(
            "/orders", json={"item": "a"}, headers={**key("k"), "x-user": "alice"}
        )
        bob = await http.post("/orders", json={"item": "b"}, headers={**key("k"), "x-user": "bob"})
    assert (alice.status_code, bob.status_code) == (201, 201)
    assert shop.calls == 2


async def test_a_body_too_large_to_fingerprint_is_refused(keys: IdempotencyKeys) -> None:
    shop = Shop()
    async with client(shop.app(keys, max_body_size=10)) as http:
        response = await http.post("/orders", content=b"x" * 11, headers=key("k"))
    assert response.status_code == 413
    assert shop.calls == 0


async def test_an_app_that_crashes_releases_the_key(keys: IdempotencyKeys) -> None:
    calls = 0

    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        message: Message = await receive()
        assert json.loads(message["body"]) == {"n": 1}
        if calls == 1:
            raise RuntimeError("worker died")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = IdempotencyMiddleware(crashing, keys)
    async with client(app) as http:
        with pytest.raises(RuntimeError):
            await http.post("/", json={"n": 1}, headers=key("k"))
        retried = await http.post("/", json={"n": 1}, headers=key("k"))
    assert retried.text == "ok"
    assert calls == 2


async def test_works_on_a_sqlite_store(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'keys.db'}")
    shop = Shop()
    async with client(shop.app(IdempotencyKeys(engine))) as http:
        first = await http.post("/orders", json={"item": "a"}, headers=key("k"))
        again = await http.post("/orders", json={"item": "a"}, headers=key("k"))
    assert first.json() == again.json()
    assert shop.calls == 1
    engine.close()


def test_options_are_checked(keys: IdempotencyKeys) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    with pytest.raises(ConfigurationError, match="IdempotencyKeys"):
        IdempotencyMiddleware(app, "keys")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_body_size"):
        IdempotencyMiddleware(app, keys, max_body_size=0)
    with pytest.raises(ConfigurationError, match="header"):
        IdempotencyMiddleware(app, keys, header="")
