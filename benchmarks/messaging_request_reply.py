"""Request-reply and claim check: seawall's round trips, beside raw nats-py, in one run.

    python benchmarks/messaging_request_reply.py
    BENCH_SCALE=0.05 BENCH_REPS=1 python benchmarks/messaging_request_reply.py   # quick look

* round trip (memory, SQLite): one requester thread sends a request to a durable
  queue and waits for the reply from a ``Responder`` (a worker) on another thread;
  one request at a time, so the figure is latency-bound.
* round trip (NATS): seawall's ``Requester.arequest`` against raw nats-py
  ``nc.request`` (the limit: same loop, same server, the same raw responder), and
  the blocking ``Requester.request``. Skipped when 127.0.0.1:4222 does not answer
  or the NATS engine is not installed.
* claim check: send + receive + ack of 1 MB payloads on a SQLite queue, through a
  ``FileBlobStore`` (fsync on) against the same payload inline in the queue row.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seawall
from _harness import Case, Result, async_timer, dump_json, measure, ops_for, print_table, sync_timer
from seawall.messaging.claim_check import ClaimCheck, FileBlobStore
from seawall.messaging.request_reply import Requester, Responder

ROUND_TRIPS = ops_for(2_000)
NATS_ROUND_TRIPS = ops_for(20_000)
CLAIM_MESSAGES = ops_for(200)
MEGABYTE = "m" * (1024 * 1024)
NATS_URL = "nats://127.0.0.1:4222"


def echo(body: Any) -> Any:
    return body


def queue_round_trips(engine: seawall.engines.Engine, label: str) -> list[Case]:
    responder = Responder(engine, "bench-rr", echo, poll_wait=0.05, concurrency=1)
    thread = threading.Thread(target=responder.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    requester = Requester(engine, "bench-rr", timeout=30.0, poll_wait=0.05)
    body = {"sku": "A-1", "quantity": 3}
    _stoppers.append((responder, thread, requester))
    return [
        Case(
            f"round_trip_{label}",
            "seawall",
            sync_timer(lambda: requester.request(body)),
            ROUND_TRIPS,
            "Requester.request -> Responder (worker thread)",
        )
    ]


_stoppers: list[tuple[Responder, threading.Thread, Requester]] = []


def _stop_all() -> None:
    for responder, thread, requester in _stoppers:
        requester.close()
        responder.stop(grace=5.0)
        thread.join(10.0)
    _stoppers.clear()


def _nats_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


class RawNatsResponder:
    """A raw nats-py responder on its own loop thread, so every requester meets the same one."""

    def __init__(self, subject: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection = asyncio.run_coroutine_threadsafe(self._start(subject), self.loop).result(
            10.0
        )

    async def _start(self, subject: str) -> Any:
        import nats

        connection = await nats.connect(NATS_URL)

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await connection.subscribe(subject, cb=respond)
        await connection.flush()
        return connection

    async def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.connection.close(), self.loop).result(10.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)


def nats_cases(loop: asyncio.AbstractEventLoop) -> tuple[list[Case], list[Any]]:
    import nats

    subject = "seawall.bench.rr"
    cleanup: list[Any] = [RawNatsResponder(subject)]
    raw = loop.run_until_complete(nats.connect(NATS_URL))
    cleanup.append(raw)
    payload = b'{"sku":"A-1","quantity":3}'
    cases = [
        Case(
            "round_trip_nats",
            "nats-py",
            async_timer(loop, lambda: raw.request(subject, payload, timeout=10.0)),
            NATS_ROUND_TRIPS,
            "nc.request (raw, the limit)",
        )
    ]
    if importlib.util.find_spec("seawall.engines.nats") is not None:
        engine = seawall.connect(NATS_URL)
        requester = Requester(engine, subject, timeout=10.0)
        body = {"sku": "A-1", "quantity": 3}
        cases.insert(
            0,
            Case(
                "round_trip_nats",
                "seawall",
                async_timer(loop, lambda: requester.arequest(body)),
                NATS_ROUND_TRIPS,
                "Requester.arequest",
            ),
        )
        cases.append(
            Case(
                "round_trip_nats_blocking",
                "seawall",
                sync_timer(lambda: requester.request(body)),
                NATS_ROUND_TRIPS,
                "Requester.request (engine's loop thread)",
            )
        )
        cleanup.append((requester, engine))
    else:
        print("NATS engine not installed: only raw nats-py measured", file=sys.stderr)
    return cases, cleanup


def claim_check_cases(directory: Path) -> list[Case]:
    engine = seawall.connect(f"sqlite:///{directory / 'claim.db'}")
    blobs = FileBlobStore(directory / "blobs")
    checked = engine.queue("bench-claimed", claim_check=ClaimCheck(blobs, threshold=64 * 1024))
    inline = engine.queue("bench-inline", max_message_size=2 * 1024 * 1024)

    def round_trip(queue: seawall.messaging.queue.Queue) -> None:
        queue.send(MEGABYTE)
        (message,) = queue.receive()
        message.ack()

    return [
        Case(
            "claim_check_1mb_send_receive_ack",
            "seawall",
            sync_timer(lambda: round_trip(checked)),
            CLAIM_MESSAGES,
            "SQLite queue + FileBlobStore (fsync), 1 MB",
        ),
        Case(
            "claim_check_1mb_send_receive_ack",
            "seawall (inline)",
            sync_timer(lambda: round_trip(inline)),
            CLAIM_MESSAGES,
            "SQLite queue, 1 MB body in the row",
        ),
    ]


def run() -> list[Result]:
    logging.getLogger("seawall").setLevel(logging.ERROR)
    directory = Path(tempfile.mkdtemp(prefix="seawall-bench-rr-"))
    results: list[Result] = []
    try:
        memory = seawall.connect("memory://")
        sqlite = seawall.connect(f"sqlite:///{directory / 'rr.db'}")
        results += measure(queue_round_trips(memory, "memory"))
        results += measure(queue_round_trips(sqlite, "sqlite"))
        _stop_all()
        if _nats_up():
            loop = asyncio.new_event_loop()
            cases, cleanup = nats_cases(loop)
            try:
                results += measure(cases)
            finally:
                for item in reversed(cleanup):
                    if isinstance(item, tuple):
                        loop.run_until_complete(item[0].aclose())
                        loop.run_until_complete(item[1].aclose())
                    else:
                        loop.run_until_complete(item.close())
                loop.close()
        else:
            print("NATS at 127.0.0.1:4222 does not answer: NATS skipped", file=sys.stderr)
        results += measure(claim_check_cases(directory))
        sqlite.close()
    finally:
        _stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    return results


def main() -> int:
    results = run()
    print_table("seawall messaging: request-reply and claim check (per round trip)", results)
    dump_json(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
