"""Fault injection for broker tests: cut the client side of this event loop's connections."""

from __future__ import annotations

import asyncio
import socket


def drop_client_sockets(port: int) -> int:
    """Shut down this loop's sockets to ``port`` (the client side of the connection)."""
    loop = asyncio.get_running_loop()
    dropped = 0
    for key in list(loop._selector.get_map().values()):  # type: ignore[attr-defined]
        try:
            sock = socket.fromfd(key.fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        with sock:
            try:
                peer = sock.getpeername()
            except OSError:
                continue
            if isinstance(peer, tuple) and peer[1] == port:
                sock.shutdown(socket.SHUT_RDWR)
                dropped += 1
    return dropped
