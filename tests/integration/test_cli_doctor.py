"""`oauthledger doctor` as an operator runs it: the installed command as a real process,
against the embedded default in a temporary data directory, and against the real
PostgreSQL, Redis and a Redis broker with and without a real Celery worker and beat
(tests/e2e/servers.py). Each check is one line, "ok|FAIL|skip  <check>: <found>[ — fix:
<what to do>]"; the exit status is 1 exactly when a line FAILs; nothing reaches stderr,
least of all a traceback, whatever is down (docs/operations.md, "oauthledger doctor").
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from oauthledger.events import catalog as ev
from oauthledger.events.keys import KeyLayout
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import user_stream
from oauthledger.events.store import EventStore
from tests.conftest import REDIS_URL
from tests.e2e.servers import (
    Process,
    lease_broker_db,
    release_broker_db,
    spawn,
    start_worker,
    wait_until,
)
from tests.support import META

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
# Port 1 on loopback: nothing listens, every connection is refused at once.
DOWN = "127.0.0.1:1"
# The status in a column of four, two spaces, the check's name.
LINE = re.compile(r"^(ok  |FAIL|skip)  ([a-z-]+): (.*)$")
NAMES = ["settings", "store", "redis", "broker", "projection", "workers", "beat",
         "key-file", "base-url", "clock"]


@dataclass
class Report:
    """One run of `oauthledger doctor`: its process and its lines by check name."""

    proc: subprocess.CompletedProcess[str]
    checks: dict[str, tuple[str, str]]  # name -> (status, the rest of the line)

    def status(self, name: str) -> str:
        """ok, FAIL or skip."""
        return self.checks[name][0]

    def text(self, name: str) -> str:
        """What the line says after "<name>: "."""
        return self.checks[name][1]

    def failed(self) -> list[str]:
        """The names of the checks that FAILed."""
        return [name for name, (status, _) in self.checks.items() if status == "FAIL"]


def doctor(env: dict[str, str], *args: str) -> Report:
    """Run the installed `oauthledger doctor` and parse its text lines (every line must
    parse, in the documented order; stderr must stay empty)."""
    proc = subprocess.run([str(OAUTHLEDGER), "doctor", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.stderr == "", proc.stderr
    checks: dict[str, tuple[str, str]] = {}
    if "--format" not in args:
        for line in proc.stdout.splitlines():
            match = LINE.match(line)
            assert match, f"not a check line: {line!r}"
            checks[match.group(2)] = (match.group(1).strip(), match.group(3))
        assert list(checks) == NAMES, proc.stdout
        assert proc.returncode == (1 if any(s == "FAIL" for s, _ in checks.values())
                                   else 0), proc.stdout
    return Report(proc, checks)


def base_env(data_dir: Path, **values: str) -> dict[str, str]:
    """This process's environment without any OAUTHLEDGER_* variable, plus ``values``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("OAUTHLEDGER_")}
    env["OAUTHLEDGER_DATA_DIR"] = str(data_dir)
    env.update({f"OAUTHLEDGER_{name}": value for name, value in values.items()})
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    """Another `oauthledger` command on the same configuration; it must succeed."""
    proc = subprocess.run([str(OAUTHLEDGER), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def add_user(env: dict[str, str], name: str) -> None:
    """`oauthledger user add` (it opens the key file, creating it on first use)."""
    run_cli(env, "user", "add", name, "--password-stdin", stdin="a-password-1\n")


# -- the embedded default ---------------------------------------------------------------


def test_embedded_default_in_a_new_data_dir_passes_and_creates_nothing(tmp_path: Path
                                                                       ) -> None:
    data = tmp_path / "data"
    report = doctor(base_env(data))
    assert report.proc.returncode == 0, report.proc.stdout
    assert report.status("settings") == "ok" and "embedded default" in report.text("settings")
    assert report.status("store") == "ok" and "not created yet" in report.text("store")
    for name in ("redis", "broker", "projection", "workers", "beat", "clock"):
        assert report.status(name) == "skip", report.proc.stdout
    assert "OAUTHLEDGER_REDIS_URL is not set" in report.text("redis")
    assert "OAUTHLEDGER_BROKER_URL is not set" in report.text("broker")
    assert "SQLite" in report.text("clock")
    assert report.status("key-file") == "skip" and "does not exist yet" in report.text(
        "key-file")
    assert report.status("base-url") == "ok"
    # A diagnosis changes nothing: no database, no key file, not even the directory.
    assert not data.exists()


def test_embedded_default_in_use_and_a_key_file_others_can_read(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    add_user(env, "alice")
    key_file = tmp_path / "data" / "secret-keys.json"

    healthy = doctor(env)
    assert healthy.proc.returncode == 0, healthy.proc.stdout
    assert healthy.status("store") == "ok"
    assert "schema at" in healthy.text("store") and "(head)" in healthy.text("store")
    assert healthy.status("key-file") == "ok" and "mode 0600" in healthy.text("key-file")

    key_file.chmod(0o644)
    report = doctor(env)
    assert report.failed() == ["key-file"]
    assert "mode 0644" in report.text("key-file")
    found, _, fix = report.text("key-file").partition(" — fix: ")
    assert fix == f"chmod 600 {shlex.quote(str(key_file))}"

    # The fix as printed is the fix.
    subprocess.run(fix, shell=True, check=True)
    assert doctor(env).status("key-file") == "ok"


def test_a_missing_key_file_fails_once_the_log_needs_it(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    add_user(env, "alice")
    (tmp_path / "data" / "secret-keys.json").rename(tmp_path / "elsewhere.json")
    report = doctor(env)
    assert report.failed() == ["key-file"]
    assert "does not exist, but the log holds 1 event(s)" in report.text("key-file")
    assert "fix: restore" in report.text("key-file")


def test_trusted_proxies_without_a_base_url(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", TRUSTED_PROXIES="10.0.0.0/8")
    report = doctor(env)
    assert report.failed() == ["base-url"]
    assert "OAUTHLEDGER_TRUSTED_PROXIES is set (10.0.0.0/8)" in report.text("base-url")
    assert "fix: set OAUTHLEDGER_BASE_URL" in report.text("base-url")

    env["OAUTHLEDGER_BASE_URL"] = "https://jira.example.com/jira"
    fixed = doctor(env)
    assert fixed.proc.returncode == 0, fixed.proc.stdout
    assert fixed.text("base-url") == "OAUTHLEDGER_BASE_URL is https://jira.example.com/jira"


def test_invalid_settings_name_the_variable_and_skip_the_rest(tmp_path: Path) -> None:
    report = doctor(base_env(tmp_path / "data", SWEEP_INTERVAL="soon"))
    assert report.failed() == ["settings"]
    assert report.text("settings").startswith("OAUTHLEDGER_SWEEP_INTERVAL: 'soon'")
    assert "fix: set OAUTHLEDGER_SWEEP_INTERVAL to a valid value" in report.text("settings")
    assert all(report.status(name) == "skip" for name in NAMES[1:])


def test_a_password_in_a_bad_setting_is_not_printed(tmp_path: Path) -> None:
    report = doctor(base_env(tmp_path / "data", DATABASE_URL="mysql://ledger:hunter2@db/x"))
    assert report.failed() == ["settings"]
    assert report.text("settings").startswith("OAUTHLEDGER_DATABASE_URL: 'mysql://ledger:***@db/x'")
    assert "hunter2" not in report.proc.stdout


def test_json_is_one_document_with_the_same_checks(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", TRUSTED_PROXIES="10.0.0.0/8")
    add_user(env, "alice")
    (tmp_path / "data" / "secret-keys.json").chmod(0o640)
    text = doctor(env)
    as_json = doctor(env, "--format", "json")
    assert as_json.proc.returncode == text.proc.returncode == 1
    document = json.loads(as_json.proc.stdout)
    assert document["ok"] is False
    assert [check["name"] for check in document["checks"]] == NAMES
    for check in document["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        # The text line is the JSON's check, rendered.
        fix = f" — fix: {check['fix']}" if check["fix"] else ""
        assert text.checks[check["name"]] == (check["status"], check["detail"] + fix)
        assert (check["fix"] is not None) == (check["status"] == "FAIL"), check
    healthy = json.loads(doctor(base_env(tmp_path / "data"), "--format", "json").proc.stdout)
    assert healthy["ok"] is False  # the key file's mode still FAILs
    (tmp_path / "data" / "secret-keys.json").chmod(0o600)
    healthy = json.loads(doctor(base_env(tmp_path / "data"), "--format", "json").proc.stdout)
    assert healthy["ok"] is True


# -- PostgreSQL, Redis and a broker -----------------------------------------------------


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database number leased for this test's broker (tests/e2e/servers.py)."""
    db, token = lease_broker_db()
    try:
        yield REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    finally:
        release_broker_db(db, token)


@pytest.fixture
def stack_env(pg_url: str, broker_url: str, key_layout: KeyLayout, tmp_path: Path
              ) -> dict[str, str]:
    """Production settings: a fresh PostgreSQL schema (not migrated), the real Redis
    under this test's prefix, the leased broker; the catch-up every second, beat's sweep
    every 10 s (the beat check allows three intervals: 30 s)."""
    return base_env(tmp_path / "data", DATABASE_URL=pg_url, REDIS_URL=REDIS_URL,
                    BROKER_URL=broker_url, REDIS_PREFIX=key_layout.prefix,
                    SECRET_KEY_FILE=str(tmp_path / "secret-keys.json"),
                    SWEEP_INTERVAL="10s", CATCHUP_INTERVAL="1s")


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Worker and beat processes of the test, stopped at its end."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def test_an_unmigrated_database_then_no_worker(stack_env: dict[str, str]) -> None:
    report = doctor(stack_env)
    assert report.status("store") == "FAIL"
    assert "schema at revision (none: never migrated)" in report.text("store")
    assert "fix: run `oauthledger db upgrade`" in report.text("store")
    assert report.status("redis") == report.status("broker") == "ok"
    assert report.status("projection") == report.status("clock") == "skip"

    run_cli(stack_env, "db", "upgrade")
    report = doctor(stack_env)
    assert report.status("store") == "ok" and "(head)" in report.text("store")
    assert report.text("projection") == "the log is empty: nothing to project yet"
    assert report.status("clock") == "ok"
    assert "the database server's clock is" in report.text("clock")
    # Nothing answers on this broker: no worker, and no beat has ever swept.
    assert report.failed() == ["workers", "beat"]
    assert "no worker answered a ping" in report.text("workers")
    assert "fix: start one or more: `oauthledger worker`" in report.text("workers")
    assert "no expiry sweep recorded" in report.text("beat")
    assert "fix: run exactly one `oauthledger beat`" in report.text("beat")


def test_workers_and_beat_running_then_gone(stack_env: dict[str, str], tmp_path: Path,
                                           redis_client: redis.Redis, key_layout: KeyLayout,
                                           pg_url: str, processes: list[Process]) -> None:
    run_cli(stack_env, "db", "upgrade")
    add_user(stack_env, "alice")
    worker = start_worker(stack_env, tmp_path)
    processes.append(worker)
    beat = spawn("celery-beat", [str(OAUTHLEDGER), "beat"], stack_env, tmp_path)
    processes.append(beat)
    wait_until(lambda: "ready." in worker.log_tail(100_000), "the worker to start", worker)
    # The sweep task records when it finished: beat sent one and the worker ran it.
    wait_until(lambda: bool(redis_client.exists(key_layout.last_sweep)),
               "a first expiry sweep", beat)
    live = ReadModel(redis_client, key_layout)
    wait_until(lambda: live.checkpoint() == 1, "alice projected", worker)

    report = doctor(stack_env)
    assert report.proc.returncode == 0, report.proc.stdout
    assert {report.status(name) for name in NAMES} == {"ok"}, report.proc.stdout
    assert report.text("workers").startswith("1 answered a ping: e2e-")
    assert report.text("beat").startswith("the last expiry sweep finished")
    assert "position 1" in report.text("store")

    beat.stop()
    worker.stop()
    # What they leave behind: the last sweep an hour ago, and a commit nobody projects
    # (written ten minutes ago by the clock of the process that appended it).
    redis_client.set(key_layout.last_sweep, f"{time.time() - 3600:.3f}")
    late = EventStore.from_url(pg_url, clock=lambda: time.time() - 600)
    try:
        late.append(user_stream("late"), 0, [ev.UserRegistered(
            name="late", display_name="Late", password_hash=None)], META)
    finally:
        late.engine.dispose()

    report = doctor(stack_env)
    assert report.failed() == ["projection", "workers", "beat"]
    assert "1 event(s) behind" in report.text("projection")
    assert "fix: make sure a worker runs" in report.text("projection")
    assert re.search(r"the last expiry sweep finished 36\d\d s ago, more than "
                     r"3 × OAUTHLEDGER_SWEEP_INTERVAL = 30 s", report.text("beat"))

    # Redis emptied: no checkpoint while the log holds events, no sweep on record.
    for key in redis_client.scan_iter(key_layout.pattern(), count=1000):
        redis_client.delete(key)
    report = doctor(stack_env)
    assert report.failed() == ["projection", "workers", "beat"]
    assert "no checkpoint in the live namespace" in report.text("projection")
    assert "`oauthledger projection rebuild`" in report.text("projection")
    assert "no expiry sweep recorded" in report.text("beat")


def test_an_unreachable_database(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "OAUTHLEDGER_DATABASE_URL":
           f"postgresql+psycopg://oauthledger:db-password@{DOWN}/oauthledger"}
    report = doctor(env)
    assert report.failed() == ["store", "workers", "beat"]
    assert report.text("store").startswith(
        f"postgresql+psycopg://oauthledger:***@{DOWN}/oauthledger is unreachable:")
    assert "fix: start the database server" in report.text("store")
    assert "db-password" not in report.proc.stdout
    for name in ("projection", "clock", "key-file"):
        assert report.status(name) == "skip" and "(see store)" in report.text(name)


def test_an_unreachable_redis(stack_env: dict[str, str]) -> None:
    run_cli(stack_env, "db", "upgrade")
    env = {**stack_env, "OAUTHLEDGER_REDIS_URL": f"redis://:redis-password@{DOWN}/0"}
    report = doctor(env)
    assert report.failed() == ["redis", "workers"]
    assert report.text("redis").startswith(f"redis://:***@{DOWN}/0: ")
    assert "fix: start Redis" in report.text("redis")
    assert "redis-password" not in report.proc.stdout
    for name in ("projection", "beat"):
        assert report.status(name) == "skip" and "(see redis)" in report.text(name)
    assert report.status("store") == report.status("clock") == "ok"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_servers_that_never_answer_are_fails_not_a_hang(stack_env: dict[str, str],
                                                        silent_port: int) -> None:
    """Each check has its own timeout: the command ends (within doctor()'s generous
    bound) with a FAIL line for each silent server."""
    silent = f"127.0.0.1:{silent_port}"
    env = {**stack_env, "OAUTHLEDGER_DATABASE_URL": f"postgresql+psycopg://u@{silent}/x",
           "OAUTHLEDGER_REDIS_URL": f"redis://{silent}/0",
           "OAUTHLEDGER_BROKER_URL": f"redis://{silent}/1"}
    report = doctor(env)
    assert report.failed() == ["store", "redis", "broker"]
    assert "timeout" in report.text("store").lower()
    assert "Timeout" in report.text("redis") and "Timeout" in report.text("broker")
    assert report.status("workers") == "skip" and "(see broker)" in report.text("workers")


def test_an_unreachable_broker(stack_env: dict[str, str]) -> None:
    run_cli(stack_env, "db", "upgrade")
    env = {**stack_env, "OAUTHLEDGER_BROKER_URL": f"redis://{DOWN}/1"}
    report = doctor(env)
    assert report.failed() == ["broker", "beat"]
    assert "fix: start the broker" in report.text("broker")
    assert report.status("workers") == "skip" and "(see broker)" in report.text("workers")
