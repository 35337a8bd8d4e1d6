"""Pre-packed ``EVALSHA`` round trips on private Redis connections: the hot path of stores.

redis-py's command layer costs more than the round trip itself for one-script calls
(locks, rate limits). Stores pack their command once into RESP bytes and send it
here on an idle connection of their own; a ``NOSCRIPT`` reply loads the script and
resends.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from seawall.errors import MissingExtraError

try:
    import redis
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("redis", "redis") from exc

if TYPE_CHECKING:
    from seawall.engines.redis import RedisEngine

__all__ = ["ScriptConnections", "bulk", "round_trip"]


def bulk(value: bytes) -> bytes:
    """``value`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def round_trip(connection: Any, command: bytes, source: bytes) -> Any:
    """Write ``command`` and read the reply; on ``NOSCRIPT`` load the script and resend."""
    connection.send_packed_command((command,), False)
    try:
        return connection.read_response()
    except redis.exceptions.NoScriptError:
        connection.send_command("SCRIPT", "LOAD", source)
        connection.read_response()
        connection.send_packed_command((command,), False)
        return connection.read_response()


class ScriptConnections:
    """Idle synchronous connections of one store, reused call after call, renewed after a fork.

    ``fail`` turns a redis-py error into the store's own error (it must raise).
    """

    def __init__(self, engine: RedisEngine, fail: Callable[[BaseException], NoReturn]) -> None:
        self.engine = engine
        self._fail = fail
        self._idle: deque[Any] = deque()
        self._pid = os.getpid()

    def _new_connection(self) -> Any:
        pool = self.engine.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def execute(self, command: bytes, source: bytes) -> Any:
        """Send one packed ``EVALSHA`` and return the reply."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle = deque()
            self._pid = os.getpid()
        try:
            connection = self._idle.pop()
            reused = True
        except IndexError:
            connection = self._new_connection()
            reused = False
        try:
            reply = round_trip(connection, command, source)
        except redis.ConnectionError as error:
            connection.disconnect()
            if not reused:
                self._fail(error)
            # an idle connection the server dropped: one more try on a fresh one
            connection = self._new_connection()
            try:
                reply = round_trip(connection, command, source)
            except redis.RedisError as retry_error:
                connection.disconnect()
                self._fail(retry_error)
        except redis.ResponseError as error:  # an error reply: the connection is fine
            self._idle.append(connection)
            self._fail(error)
        except redis.RedisError as error:
            connection.disconnect()
            self._fail(error)
        except BaseException:  # interrupted mid round trip: the reply may still be in flight
            connection.disconnect()
            raise
        self._idle.append(connection)
        return reply

    def close(self) -> None:
        """Disconnect every idle connection."""
        while self._idle:
            self._idle.pop().disconnect()
