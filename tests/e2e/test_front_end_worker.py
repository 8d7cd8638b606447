"""The front end's worker (services/http/worker.py: gunicorn's gevent worker, each
response's head sent with its body) over a raw socket, on a real server: the HTTP
framing a client relies on holds in the cases where a held head could go wrong —
bodiless answers on a kept-alive connection, pipelined requests, ``Expect:
100-continue``, a chunked request body, and the connection closing after the answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import servers as s


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s.Server]:
    tmp = tmp_path_factory.mktemp("worker")
    srv = s.start_server(s.embedded_env(tmp / "data"), Path(tmp), workers=None)
    try:
        yield srv
    finally:
        srv.stop()


class Conn:
    """A raw HTTP/1.1 connection that reads responses by their framing."""

    def __init__(self, server: s.Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names), body by Content-Length."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def test_head_then_get_on_one_kept_alive_connection(server: s.Server) -> None:
    conn = Conn(server)
    try:
        conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        # No body follows a HEAD answer (405 here: the check answers GET only), so its
        # head alone is the response; the next answer must start right after it.
        status, headers, _ = conn.response(head_only=True)
        assert status == 405 and "GET" in headers["allow"]
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response() [::2] == (200, b"ok\n")
    finally:
        conn.close()


def test_pipelined_requests_answer_in_order(server: s.Server) -> None:
    conn = Conn(server)
    try:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /no/such/page HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[0] == 200
        assert conn.response(head_only=True)[0] == 405
        assert conn.response()[0] == 404
        assert conn.response()[::2] == (200, b"ok\n")
    finally:
        conn.close()


def test_expect_100_continue_then_the_answer(server: s.Server) -> None:
    body = b"oauth_consumer_key=nobody"
    conn = Conn(server)
    try:
        conn.send(b"POST /plugins/servlet/oauth/request-token HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, _, _ = conn.response(head_only=True)
        assert status == 100  # the interim answer came before the body was sent
        conn.send(body)
        status, _, answer = conn.response()
        # RFC 5849 §3.2: a request lacking parameters is 400 with the problem reported.
        assert status == 400 and b"oauth_problem=parameter_absent" in answer
    finally:
        conn.close()


def test_chunked_request_body(server: s.Server) -> None:
    conn = Conn(server)
    try:
        conn.send(b"POST /plugins/servlet/oauth/request-token HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n"
                  b"5\r\noauth\r\n14\r\n_consumer_key=nobody\r\n0\r\n\r\n")
        status, _, answer = conn.response()
        assert status == 400 and b"oauth_problem=parameter_absent" in answer
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # still in step
        assert conn.response()[::2] == (200, b"ok\n")
    finally:
        conn.close()


def test_connection_close_gets_the_whole_answer(server: s.Server) -> None:
    conn = Conn(server)
    try:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert conn.response()[::2] == (200, b"ok\n")
        with pytest.raises(EOFError):  # and then the server closes
            conn._fill()
    finally:
        conn.close()
