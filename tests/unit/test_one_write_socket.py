"""services/http/worker.py's OneWriteSocket: a response head leaves with the write after
it, and before anything else touches the socket. The wrapper is checked here against a
socket pair (real kernel sockets) and a recorder of the calls it makes; the worker
itself runs under every e2e test (tests/e2e/test_front_end_worker.py for the HTTP
corner cases)."""

from __future__ import annotations

import socket
import threading
from typing import Any

from oauthledger.services.http.worker import OneWriteSocket

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"


class Recorder:
    """Records what reaches the socket below."""

    def __init__(self, accepts: int = 1 << 20) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.accepts = accepts  # bytes one send() takes, as a full send buffer would

    def send(self, data: bytes, *args: Any) -> int:
        self.calls.append(("send", bytes(data)))
        return min(len(data), self.accepts)

    def sendall(self, data: bytes, *args: Any) -> None:
        self.calls.append(("sendall", bytes(data)))

    def recv(self, n: int) -> bytes:
        self.calls.append(("recv", n))
        return b""

    def close(self) -> None:
        self.calls.append(("close", None))


def test_head_and_body_leave_in_one_write() -> None:
    below = Recorder()
    sock = OneWriteSocket(below)
    sock.sendall(HEAD)
    assert below.calls == []
    sock.sendall(b"ok\n")
    assert below.calls == [("send", HEAD + b"ok\n")]
    sock.sendall(b"more")  # later writes pass straight through
    assert below.calls[-1] == ("send", b"more")


def test_a_held_head_goes_out_before_any_other_use() -> None:
    for use in ("recv", "close"):
        below = Recorder()
        sock = OneWriteSocket(below)
        sock.sendall(HEAD)
        getattr(sock, use)(*((10,) if use == "recv" else ()))
        assert below.calls[0] == ("sendall", HEAD)  # a bodiless response (HEAD, 204)
        assert below.calls[1][0] == use


def test_memoryview_and_body_that_looks_like_a_head() -> None:
    below = Recorder()
    sock = OneWriteSocket(below)
    sock.sendall(memoryview(HEAD))
    sock.sendall(memoryview(b"HTTP/ is the body"))
    assert below.calls == [("send", HEAD + b"HTTP/ is the body")]


def test_what_one_send_leaves_goes_out_with_sendall() -> None:
    below = Recorder(accepts=5)
    sock = OneWriteSocket(below)
    sock.sendall(HEAD)
    sock.sendall(b"ok\n")
    assert below.calls == [("send", HEAD + b"ok\n"), ("sendall", (HEAD + b"ok\n")[5:])]


def test_a_body_larger_than_the_send_buffer_arrives_whole() -> None:
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    body = bytes(range(256)) * 16384  # 4 MiB: many times the send buffer
    received = bytearray()

    def drain() -> None:
        while chunk := client.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        sock = OneWriteSocket(server)
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        reader.join(30)
        assert bytes(received) == b"HTTP/1.1 200 OK\r\n\r\n" + body
    finally:
        server.close()
        client.close()


def test_bytes_arrive_in_order_on_real_sockets() -> None:
    server, client = socket.socketpair()
    try:
        sock = OneWriteSocket(server)
        sock.sendall(HEAD)
        sock.sendall(b"ok\n")
        sock.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")  # held: nothing after it ...
        sock.shutdown(socket.SHUT_WR)  # ... until the socket is used otherwise
        received = b""
        while chunk := client.recv(4096):
            received += chunk
        assert received == HEAD + b"ok\n" + b"HTTP/1.1 204 No Content\r\n\r\n"
    finally:
        server.close()
        client.close()
