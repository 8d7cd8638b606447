"""Which installation a command talks to (docs/cli.md, "Which installation"): the data
directory defaults to ./.oauthledger of wherever the command runs, so a command run
from another folder must say where it looked and how to point elsewhere (exit 1)
instead of starting a new, empty installation with a new sealing key. Only `serve`,
`user add` (the first admin) and `db upgrade` create one; `--data-dir` on the root group
points every command at an installation; `oauthledger status` says which one is in use.
Real processes, from a directory of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oauthledger.services.installation import ensure_installation
from oauthledger.services.users import register_user
from tests.conftest import embedded_deps_in, migrated_store
from tests.integration.test_cli_no_traceback import CASES
from tests.support import META

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
# Commands that may create an installation, or a key file, where there is none (and
# say so); `serve` and the workers are not run here.
CREATORS = {"user add", "db upgrade", "keys rotate"}
NOT_RUN = {"serve", "worker", "beat"}
PG_PASSWORD_URL = "postgresql+psycopg://auditor:hunter2@127.0.0.1:1/ledger"


def env_of(**values: str) -> dict[str, str]:
    """This process's environment without OAUTHLEDGER_* variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env.update(values)
    return env


def oauthledger(cwd: Path, *args: str, env: dict[str, str] | None = None,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command as a real process, run from ``cwd``."""
    return subprocess.run([str(OAUTHLEDGER), *args], cwd=cwd, env=env or env_of(),
                          input=stdin, capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``oauthledger: ...`` line of a failed command."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oauthledger: "), proc.stderr
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty directory that is not an installation's."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def installation(tmp_path: Path) -> Path:
    """An embedded installation's data directory, holding user alice."""
    data = tmp_path / "installation"
    with embedded_deps_in(data) as deps:
        register_user(deps.ledger, "alice", "alice-password-1", meta=META)
    return data


# --- commands run where there is no installation -------------------------------------------


@pytest.mark.parametrize("path", sorted(set(CASES) - CREATORS - NOT_RUN))
def test_no_command_starts_an_installation_where_there_is_none(elsewhere: Path,
                                                               path: str) -> None:
    case = CASES[path]
    proc = oauthledger(elsewhere, *path.split(), *case.args, stdin=case.stdin)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (elsewhere / ".oauthledger").exists(), (path, proc.stdout, proc.stderr)
    if path == "db current":
        # It reports, and says where it looked: there is no database to read.
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("(none) (no event database at "
                                      f"{elsewhere / '.oauthledger' / 'events.sqlite3'}")
        return
    if path == "doctor":
        # A diagnosis: a new data directory is a healthy start for the server.
        assert proc.returncode == 0 and "not created yet" in proc.stdout, proc.stdout
        return
    if proc.returncode == 0:
        pytest.fail(f"{path} succeeded where there is no installation: {proc.stdout}")
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("oauthledger: "), proc.stderr
    if path in ("keys list", "keys activate"):
        assert f"key file {elsewhere / '.oauthledger' / 'secret-keys.json'} does not exist" \
            in line and "--data-dir" in line, line
        return
    if path in ("projection rebuild", "projection status", "consumer failures"):
        return  # the embedded Redis lives in the server: their own line says so
    assert f"no installation in {elsewhere / '.oauthledger'}" in line, line
    assert "the data directory does not exist" in line
    assert "OAUTHLEDGER_DATA_DIR is not set" in line
    assert "--data-dir DIR" in line and "oauthledger user add" in line


def test_a_data_directory_without_a_database_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    line = one_line(oauthledger(tmp_path, "consumer", "list",
                                env=env_of(OAUTHLEDGER_DATA_DIR=str(data))))
    assert f"no installation in {data} (it holds no events.sqlite3; from " \
           "OAUTHLEDGER_DATA_DIR or --data-dir)" in line
    assert sorted(p.name for p in data.iterdir()) == []


def test_a_sqlite_url_to_a_missing_file_is_named(tmp_path: Path, elsewhere: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.sqlite3'}"
    line = one_line(oauthledger(elsewhere, "events", "stats",
                                env=env_of(OAUTHLEDGER_DATABASE_URL=url)))
    assert f"no event database at {tmp_path / 'gone.sqlite3'} (OAUTHLEDGER_DATABASE_URL)" \
        in line
    assert not (tmp_path / "gone.sqlite3").exists()


def test_first_admin_creates_the_installation_and_says_so(elsewhere: Path) -> None:
    added = oauthledger(elsewhere, "user", "add", "admin", "--admin", "--password-stdin",
                        stdin="a-long-password\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "user admin added (admin)\n"
    data = elsewhere / ".oauthledger"
    assert added.stderr.splitlines() == [
        f"oauthledger: created a new installation in {data} (events.sqlite3 and the key "
        f"file); other commands find it from this directory, or with --data-dir {data}"]
    assert (data / "events.sqlite3").exists() and (data / "secret-keys.json").exists()
    # From the same directory, the next command finds it and says nothing more.
    listed = oauthledger(elsewhere, "consumer", "list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "no consumers\n", "")


def test_a_short_password_starts_no_installation(elsewhere: Path) -> None:
    line = one_line(oauthledger(elsewhere, "user", "add", "admin", "--password-stdin",
                                stdin="short\n"))
    assert "the password on standard input: must be at least 8 characters" in line
    assert not (elsewhere / ".oauthledger").exists()


# --- --data-dir ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("consumer", "add", "jira", "--name", "Jira", "--generate-secret"),
    ("user", "disable", "alice"),
    ("audit", "user", "alice"),
    ("events", "stats"),
    ("keys", "list"),
    ("db", "current"),
    ("resource-server", "add", "rs1"),
    ("provider", "list"),
])
def test_data_dir_option_points_every_command_at_the_installation(
        installation: Path, elsewhere: Path, args: tuple[str, ...]) -> None:
    proc = oauthledger(elsewhere, "--data-dir", str(installation), *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (elsewhere / ".oauthledger").exists()


def test_data_dir_option_overrides_the_variable_and_is_made_absolute(
        installation: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    proc = oauthledger(tmp_path, "--data-dir", installation.name, "status", "--format", "json",
                       env=env_of(OAUTHLEDGER_DATA_DIR=str(wrong)))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["data_dir"] == str(installation)
    assert report["data_dir_exists"] is True
    assert report["data_dir_source"] == "from OAUTHLEDGER_DATA_DIR or --data-dir"
    assert not wrong.exists()


def test_an_empty_data_dir_option_is_a_usage_error(elsewhere: Path) -> None:
    # `--data-dir "$UNSET"` must not quietly mean the current directory.
    proc = oauthledger(elsewhere, "--data-dir", "", "consumer", "list")
    assert proc.returncode == 2
    assert "--data-dir" in proc.stderr and "must name a directory" in proc.stderr


# --- the key file of a PostgreSQL installation ------------------------------------------------


def test_a_missing_key_file_is_refused(pg_url: str, tmp_path: Path) -> None:
    with migrated_store(pg_url):
        pass
    env = env_of(OAUTHLEDGER_DATABASE_URL=pg_url)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    # The key file is part of the installation: where there is none, a command says
    # so rather than seal under a new key no server has.
    for args in (("consumer", "list"), ("consumer", "add", "k2", "--name", "K",
                                         "--generate-secret")):
        line = one_line(oauthledger(first, *args, env=env))
        key_file = first / ".oauthledger" / "secret-keys.json"
        assert line.startswith(f"oauthledger: no key file at {key_file} (in the data "
                               "directory: OAUTHLEDGER_DATA_DIR is not set")
        assert "--data-dir DIR" in line and "OAUTHLEDGER_SECRET_KEY_FILE" in line
        assert not (first / ".oauthledger").exists()
    # The first admin starts it (the log is empty), and says so.
    added = oauthledger(first, "user", "add", "admin", "--admin", "--password-stdin",
                        env=env, stdin="a-long-password\n")
    assert added.returncode == 0, added.stderr
    data = first / ".oauthledger"
    assert added.stderr.splitlines() == [
        f"oauthledger: created a new key file {data / 'secret-keys.json'}; other commands "
        f"find it from this directory, or with --data-dir {data}"]
    # Now the log holds an event: not even `user add` starts another key file.
    refused = one_line(oauthledger(second, "user", "add", "bob", "--password-stdin", env=env,
                                   stdin="bob-password-1\n"))
    assert "holds 1 event(s) sealed under another one" in refused
    assert not (second / ".oauthledger").exists()
    # Pointed at the installation's data directory, it works.
    ok = oauthledger(second, "--data-dir", str(data), "user", "add", "bob", "--password-stdin",
                     env=env, stdin="bob-password-1\n")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "user bob added\n", "")


# --- oauthledger status -----------------------------------------------------------------------


def test_status_names_the_installation(installation: Path, elsewhere: Path) -> None:
    with embedded_deps_in(installation) as deps:
        key = ensure_installation(deps.ledger, deps.sealer, META).key
    env = env_of(OAUTHLEDGER_DATA_DIR=str(installation),
                 OAUTHLEDGER_BASE_URL="https://ledger.example.com")
    text = oauthledger(elsewhere, "status", env=env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        f"data directory  {installation} (exists; from OAUTHLEDGER_DATA_DIR or --data-dir)",
        "mode            embedded default",
        f"store           sqlite:///{installation / 'events.sqlite3'} (exists), 2 event(s)",
        "redis           embedded (in process)",
        "broker          embedded (in process)",
        f"key file        {installation / 'secret-keys.json'} (exists)",
        f"consumer key    {key}",
        "base URL        https://ledger.example.com",
    ]
    as_json = json.loads(oauthledger(elsewhere, "status", "--format", "json", env=env).stdout)
    assert as_json == {
        "data_dir": str(installation), "data_dir_exists": True,
        "data_dir_source": "from OAUTHLEDGER_DATA_DIR or --data-dir",
        "mode": "embedded default",
        "store": f"sqlite:///{installation / 'events.sqlite3'}", "store_exists": True,
        "events": 2, "redis": "embedded (in process)", "broker": "embedded (in process)",
        "key_file": str(installation / "secret-keys.json"), "key_file_exists": True,
        "consumer_key": key, "base_url": "https://ledger.example.com", "problem": None,
    }


def test_status_where_there_is_no_installation(elsewhere: Path) -> None:
    proc = oauthledger(elsewhere, "status")
    assert proc.returncode == 1
    data = elsewhere / ".oauthledger"
    assert proc.stdout.splitlines()[0] == (
        f"data directory  {data} (does not exist; OAUTHLEDGER_DATA_DIR is not set: the "
        "default, ./.oauthledger of the current directory)")
    assert f"store           sqlite:///{data / 'events.sqlite3'} (does not exist)" \
        in proc.stdout
    assert one_line(proc).startswith(f"oauthledger: no installation in {data}")
    assert not data.exists()


def test_status_of_production_settings_masks_passwords(elsewhere: Path) -> None:
    env = env_of(OAUTHLEDGER_DATABASE_URL=PG_PASSWORD_URL,
                 OAUTHLEDGER_REDIS_URL="redis://:redis-pw@127.0.0.1:1/0",
                 OAUTHLEDGER_BROKER_URL="redis://:broker-pw@127.0.0.1:1/1")
    proc = oauthledger(elsewhere, "status", "--format", "json", env=env)
    assert proc.returncode == 1  # the store does not answer: named on stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert "-pw" not in proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["mode"] == "production"
    assert report["store"] == "postgresql+psycopg://auditor:***@127.0.0.1:1/ledger"
    assert report["store_exists"] is None and report["events"] is None
    assert report["redis"] == "redis://:***@127.0.0.1:1/0"
    assert report["broker"] == "redis://:***@127.0.0.1:1/1"
    assert report["problem"].startswith(
        "event store at postgresql+psycopg://auditor:***@127.0.0.1:1/ledger is unavailable")
    assert "connect_timeout" not in report["problem"]
    assert one_line(proc) == f"oauthledger: {report['problem']}"
    assert not (elsewhere / ".oauthledger").exists()
