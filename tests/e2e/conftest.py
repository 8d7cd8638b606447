"""Process helpers for end-to-end tests: real Celery worker and beat processes started
through the `oauthledger` script, each in its own process group so a test can stop or
kill -9 it, and every one is stopped when the test ends.

Isolation: Redis keys use the test's unique prefix (OAUTHLEDGER_REDIS_PREFIX); the broker
uses a Redis database number leased for the test (SET NX in DB 0), flushed before and
after, so concurrent test runs never consume each other's messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from celery import Celery

from oauthledger.events.keys import KeyLayout
from tests.conftest import REDIS_URL
from tests.e2e import servers

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
BROKER_DBS = range(8, 16)
LEASE_SECONDS = 900


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.05
             ) -> object:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``.
    A bound on waiting, never a timing assertion: generous on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def broker_url(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis URL on a database number leased to this test alone."""
    token = uuid.uuid4().hex
    for db in BROKER_DBS:
        lease = f"oauthledger-test:broker-db:{db}"
        if redis_client.set(lease, token, nx=True, ex=LEASE_SECONDS):
            break
    else:
        pytest.fail("no free broker database number (8-15) on the test Redis")
    base = REDIS_URL.rsplit("/", 1)[0]
    url = f"{base}/{db}"
    broker = redis.Redis.from_url(url)
    broker.flushdb()
    try:
        yield url
    finally:
        broker.flushdb()
        broker.close()
        if redis_client.get(lease) == token.encode():
            redis_client.delete(lease)


@dataclass
class Procs:
    """Worker and beat processes of one test."""

    env: dict[str, str]
    logs: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None
               ) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(OAUTHLEDGER), *args], env=env or self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_text(self, name: str) -> str:
        """What a process printed so far."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker(self, name: str, concurrency: int = 1, wait: bool = True) -> subprocess.Popen:
        """Start a worker (node ``name@e2e``) and wait until it consumes."""
        proc = self._start(name, ["worker", "--concurrency", str(concurrency),
                                  "--name", f"{name}@e2e", "--loglevel", "INFO"])
        if wait:
            wait_for(lambda: "ready." in self.log_text(name) or proc.poll() is not None,
                     90, f"worker {name} to start")
            assert proc.poll() is None, self.log_text(name)
        return proc

    def beat(self, name: str, data_dir: Path | None = None) -> subprocess.Popen:
        """Start beat (its own schedule file under ``data_dir``)."""
        env = dict(self.env)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            env["OAUTHLEDGER_DATA_DIR"] = str(data_dir)
        proc = self._start(name, ["beat", "--loglevel", "INFO"], env)
        wait_for(lambda: "beat: Starting" in self.log_text(name) or proc.poll() is not None,
                 60, f"beat {name} to start")
        assert proc.poll() is None, self.log_text(name)
        return proc

    @staticmethod
    def kill9(proc: subprocess.Popen) -> None:
        """SIGKILL the process and its children (the prefork pool)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL if it lingers."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                Procs.kill9(proc)
            except ProcessLookupError:
                pass
        # Children of a stopped worker must not outlive it either.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop every process this helper started."""
        for _, proc in reversed(self.procs):
            self.stop(proc)


@pytest.fixture
def worker_env(pg_url: str, broker_url: str, key_layout: KeyLayout, tmp_path: Path
               ) -> dict[str, str]:
    """Environment for worker/beat processes of this test (fast catch-up and sweeps)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env.update({
        "OAUTHLEDGER_DATABASE_URL": pg_url,
        "OAUTHLEDGER_REDIS_URL": REDIS_URL,
        "OAUTHLEDGER_BROKER_URL": broker_url,
        "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix,
        "OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
        "OAUTHLEDGER_CATCHUP_INTERVAL": "1s",
        "OAUTHLEDGER_SWEEP_INTERVAL": "1s",
        "PYTHONUNBUFFERED": "1",
    })
    (tmp_path / "data").mkdir()
    return env


@pytest.fixture
def procs(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Procs]:
    """Starts workers and beats; stops all of them when the test ends."""
    logs = tmp_path / "logs"
    logs.mkdir()
    helper = Procs(worker_env, logs)
    try:
        yield helper
    finally:
        helper.stop_all()


@pytest.fixture
def sender(broker_url: str) -> Iterator[Callable[..., None]]:
    """Sends a task by name, as a front end does."""
    app = Celery("oauthledger-e2e", broker=broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"])

    def send(name: str, **kwargs: object) -> None:
        app.send_task(name, kwargs=kwargs, ignore_result=True)

    yield send
    app.close()


# -- the shared deployment of the dance, problem and resource tests ---------------------


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> servers.Stack:
    """The session's deployment: two gunicorn front ends and a Celery worker."""
    return servers.shared_stack(request.config)


@pytest.fixture(scope="module")
def rsa() -> servers.RsaPair:
    """An RSA key pair for the module's consumers."""
    return servers.rsa_pair()


@pytest.fixture(scope="module")
def user(stack: servers.Stack) -> str:
    """A user who approves."""
    return servers.add_user(stack)
