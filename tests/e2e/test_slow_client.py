"""Slow clients do not stall a front end (docs/operations.md, "Worker model"): while
several connections hold half a request open, a real gunicorn keeps answering /healthz,
and its arbiter never kills a worker for missing its heartbeat (WORKER TIMEOUT) — on
the embedded default (one process) and on a production front end (PostgreSQL + Redis).

gunicorn's worker timeout is lowered to a few seconds (GUNICORN_CMD_ARGS overrides the
packaged configuration), so that the connections are held well past it."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e import servers as s

# Connections that send half a request and wait: more than any thread pool a worker
# could afford (the threaded worker used before had 16 threads per worker); under gevent
# each holds one greenlet.
STALLED = 100
WORKER_TIMEOUT = 4  # seconds: gunicorn kills a worker silent for longer
HOLD = 3 * WORKER_TIMEOUT  # how long the connections stay open while /healthz is asked
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # no blank line: headers unfinished


@contextlib.contextmanager
def stalled_connections(server: s.Server, count: int) -> Iterator[list[socket.socket]]:
    """``count`` raw sockets, each having sent half a request, held open."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(HALF_REQUEST)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def assert_keeps_serving(server: s.Server, workers: int) -> None:
    """Hold more stalled connections than the server has workers for longer than the
    worker timeout; /healthz answers all along and no worker is killed."""
    with stalled_connections(server, max(STALLED, workers + 2)):
        deadline = time.monotonic() + HOLD
        answered = 0
        while time.monotonic() < deadline:
            # A generous bound: a stalled sync worker never answers within it.
            resp = requests.get(server.url + "/healthz", timeout=HOLD)
            assert resp.status_code == 200, resp.text
            answered += 1
            time.sleep(0.5)
        assert answered >= 2
    log = server.process.log_path.read_text(errors="replace")
    assert "WORKER TIMEOUT" not in log, log[-4000:]
    assert server.process.alive(), log[-4000:]


@pytest.fixture
def short_timeout() -> dict[str, str]:
    """Environment that lowers gunicorn's worker timeout below the hold time."""
    return {"GUNICORN_CMD_ARGS": f"--timeout {WORKER_TIMEOUT}"}


def test_embedded_default_serves_while_clients_stall(tmp_path: Path,
                                                     short_timeout: dict[str, str]) -> None:
    env = s.embedded_env(tmp_path / "data", **short_timeout)
    server = s.start_server(env, tmp_path, workers=None)  # the embedded default: 1 worker
    try:
        assert_keeps_serving(server, workers=1)
    finally:
        server.stop()


def test_production_front_end_serves_while_clients_stall(
        stack: s.Stack, short_timeout: dict[str, str]) -> None:
    with s.extra_server(stack, **short_timeout) as server:  # 2 workers
        assert_keeps_serving(server, workers=2)
