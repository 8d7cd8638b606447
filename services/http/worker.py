"""The front end's gunicorn worker: gunicorn's gevent worker, answering each response
with one write instead of two.

gunicorn sends a response's status line and headers in one ``sendall`` and its body in
another. On a small response (every answer of the hot path is a few hundred bytes) that
doubles the send system calls — each of which, on loopback or a busy host, is a good
part of the request's cost (docs/BENCHMARKS.md, "Front end": two sends were 14 % of a
validated request's CPU). :class:`OneWriteSocket` holds the head back and sends it with
the next write, so head and body leave in one call (and one TCP segment).

Ordering is kept by construction: the held head goes out before anything else touches
the socket — the next ``sendall`` carries it, and any other use (``recv`` for the next
request on a kept-alive connection, ``close``, ``sendfile``, ``fileno``, ``send`` of an
interim ``100 Continue``) sends it first. A response without a body (HEAD, 204, 304)
therefore leaves when gunicorn turns to the connection's next request, immediately.
TLS sockets are left as they are (gunicorn inspects them by type).

The worker also yields to the event loop after every response (:class:`GeventWorker`),
so that connections take turns.

Deliberately a wrapper rather than a change to gunicorn's Response class: it keeps every
line of gunicorn's HTTP handling (framing, chunking, error answers) as it is.
"""

from __future__ import annotations

import ssl
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker

from oauthledger.services.logs import route_hub_errors

_HEAD = b"HTTP/"


def _send_all(sock: Any, data: Any, *args: Any) -> None:
    """``sock.sendall(data)``, starting with one plain ``send``: gevent's ``sendall``
    asks the kernel for the socket's send buffer size (a ``getsockopt`` system call) on
    every call, to cut large data into chunks, while a response of a few hundred bytes
    leaves whole in one ``send``. Whatever that send leaves is passed to ``sendall``."""
    sent = sock.send(data, *args)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], *args)


class OneWriteSocket:
    """A connected socket whose response head waits for the write after it."""

    __slots__ = ("_head", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._head: bytes | None = None

    def sendall(self, data: Any, *args: Any) -> None:
        """Send ``data`` — with the held head in front of it, or hold ``data`` itself
        when it is a response head."""
        head = self._head
        if head is not None:
            self._head = None
            _send_all(self._sock, head + bytes(data), *args)
        elif not args and bytes(data[:5]) == _HEAD:
            self._head = bytes(data)
        else:
            _send_all(self._sock, data, *args)

    def flush(self) -> None:
        """Send the held head, if any."""
        head = self._head
        if head is not None:
            self._head = None
            self._sock.sendall(head)

    def __getattr__(self, name: str) -> Any:
        # Any other use of the socket sends the held head first (module docstring).
        self.flush()
        return getattr(self._sock, name)


class GeventWorker(_GeventWorker):
    """gunicorn's gevent worker with :class:`OneWriteSocket` connections, taking turns
    between connections after every response."""

    def run(self) -> None:
        """gunicorn's loop, with this worker's hub reporting a failed greenlet as a log
        record in the configured format (services/logs.py) instead of printing it."""
        route_hub_errors(gevent.get_hub())
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection (gunicorn's handling, unchanged)."""
        if not isinstance(client, ssl.SSLSocket):
            client = OneWriteSocket(client)
        super().handle(listener, client, addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """One request, then a turn for the other connections: a kept-alive client whose
        next request is already waiting would otherwise be read and served without the
        loop switching, again and again, while the other connections wait (a tail of
        hundreds of milliseconds at full load with 16 busy connections)."""
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            gevent.sleep(0)
