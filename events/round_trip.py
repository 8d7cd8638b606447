"""One Redis round trip for the hot path, without redis-py's pipeline machinery.

The protected-resource lookup sends two commands (the nonce's ``SET NX EX`` and one
``MGET``) for every signed request. Through ``redis.Redis.pipeline()`` that costs more
Python than everything else the read model does per request: a Pipeline object, a
connection checkout that polls the socket for stray data, retry and observability
wrappers, response callbacks (docs/BENCHMARKS.md, "Front end": 23 % of a validated
request's CPU). :class:`RoundTrip` keeps redis-py's connection class, its hiredis
reply parser and its command packing, and does only this: take an idle connection, send
the packed commands in one write, read one reply per command, put the connection back.

Deliberately not a library call: redis-py has no lighter public path for a batch of
commands. What its pool adds and this keeps anyway:

- a connection is put back only after every reply was read; any error disconnects it
  and drops it, so no connection ever holds an unread reply (what the pool's checkout
  poll guards against);
- a connection that breaks (Redis restarted, an idle connection closed by the server or
  a firewall) is replaced and the batch is sent once more, as redis-py's default retry
  does; a second failure raises ``redis.ConnectionError`` to the caller;
- connections are per process: after a fork the child starts with none.

Clients that are not a plain redis-py client over a ``redis.ConnectionPool`` (the
embedded default's in-process fakeredis, a cluster or sentinel client) take the
ordinary pipeline: one code path in behaviour, the fast one where it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.connection import AbstractConnection

from oauthledger.events.process_id import current_pid

# At most this many idle connections are kept per process; more concurrent requests
# open more connections, which are closed when put back past the limit.
MAX_IDLE = 64

Command = Sequence[str | bytes | int | float]
_SOCKETS = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)


class RoundTrip:
    """Sends a batch of commands in one round trip and returns their raw replies
    (bytes, lists, integers, ``None``; ``SET ... NX`` answers ``b"OK"`` or ``None``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        pool = getattr(client, "connection_pool", None)
        # Only a plain redis-py pool of real sockets: its connection class and arguments
        # are all this uses (fakeredis has the same pool with a fake connection class).
        real = type(pool) is redis.ConnectionPool and pool.connection_class in _SOCKETS
        self._pool = pool if real else None
        # hiredis packs a command in C, eight times faster than redis-py's serializer
        # around it; it encodes text as UTF-8 (strict), so only for connections that do.
        kwargs = pool.connection_kwargs if real else {}
        self._hiredis_packs = (kwargs.get("encoding", "utf-8").lower() in ("utf-8", "utf8")
                               and kwargs.get("encoding_errors", "strict") == "strict")
        self._idle: list[AbstractConnection] = []
        self._pid = current_pid()

    def run(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands``, in order. Raises ``redis.RedisError`` as redis-py
        would (``ResponseError`` for an error reply, ``ConnectionError`` when Redis
        cannot be reached)."""
        if self._pool is None:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()
        try:
            return self._run_once(commands)
        except (redis.ConnectionError, redis.TimeoutError):
            # One more try on a fresh connection (the broken one is already dropped):
            # an idle connection the server or a restart closed fails only on use.
            return self._run_once(commands)

    def _run_once(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._take()
        try:
            packed = ([b"".join([hiredis.pack_command(tuple(c)) for c in commands])]
                      if self._hiredis_packs else conn.pack_commands(commands))
            conn.send_packed_command(packed, check_health=False)
            # An error reply raises ResponseError here, with later replies unread.
            replies = [conn.read_response() for _ in commands]
        except BaseException:
            # Unread replies may be left on it: never reuse (redis-py's read_response
            # disconnects on its own errors; a greenlet killed mid-read does not).
            conn.disconnect()
            raise
        self._give(conn)
        return replies

    def _take(self) -> AbstractConnection:
        if self._pid != current_pid():  # forked: the parent's sockets are not ours
            self._idle = []
            self._pid = current_pid()
        try:
            return self._idle.pop()
        except IndexError:
            assert self._pool is not None
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            conn.connect()
            return conn

    def _give(self, conn: AbstractConnection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.disconnect()

    def close(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
