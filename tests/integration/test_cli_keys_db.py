"""`oauthledger keys ...` and `oauthledger db ...` against real stores (SQLite in a
temporary data directory, a fresh PostgreSQL schema), in-process through CliRunner and
as the installed script."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from oauthledger.events import catalog as ev
from oauthledger.events.connections import open_sealer, open_store
from oauthledger.events.migrate import head_revision
from oauthledger.events.sealing import KeyRing, Sealer, load_key_ring
from oauthledger.events.settings import load_settings
from oauthledger.services.cli import db as cli_db
from oauthledger.services.cli import events as cli_events
from oauthledger.services.cli import keys as cli_keys
from oauthledger.services.cli.main import cli

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")

for _group in (*cli_db.COMMANDS, *cli_events.COMMANDS, *cli_keys.COMMANDS):
    cli.add_command(_group)


def run(env: dict[str, str | None], *args: str) -> Result:
    """Run the real root group in-process."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run_process(env: dict[str, str | None], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `oauthledger` script with only ``env``'s OAUTHLEDGER_* set."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([str(OAUTHLEDGER), *args], env=full, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str | None]:
    """The embedded default: nothing but a data directory."""
    return {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": None,
            "OAUTHLEDGER_SECRET_KEY_FILE": None}


@pytest.fixture
def pg_env(tmp_path: Path, pg_url: str) -> dict[str, str | None]:
    """PostgreSQL in a fresh, unmigrated schema."""
    return {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": pg_url,
            "OAUTHLEDGER_SECRET_KEY_FILE": None}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_env(request) -> dict[str, str | None]:
    """Either backend."""
    return request.getfixturevalue("sqlite_env" if request.param == "sqlite" else "pg_env")


def settings_for(env: dict[str, str | None]):
    """The settings the CLI sees with ``env``."""
    return load_settings({k: v for k, v in env.items() if v is not None})


# --- db -------------------------------------------------------------------------------


def test_db_current_and_upgrade_as_processes(any_env):
    head = head_revision()
    before = run_process(any_env, "db", "current")
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("(none)") and f"head is {head}" in before.stdout
    check = run_process(any_env, "db", "current", "--check")
    assert check.returncode == 1

    up = run_process(any_env, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().endswith(f": (none) -> {head}")
    assert "Traceback" not in up.stderr

    assert run_process(any_env, "db", "current", "--check").stdout.strip() == f"{head} (head)"
    again = run(any_env, "db", "upgrade")
    assert again.exit_code == 0
    assert f"{head} -> {head} (already up to date)" in again.stdout


def test_postgres_events_before_upgrade_is_one_line(pg_env):
    result = run(pg_env, "events", "stats")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "oauthledger db upgrade" in lines[0]
    assert "Traceback" not in result.stderr


def test_events_commands_as_processes_on_postgres(pg_env):
    assert run_process(pg_env, "db", "upgrade").returncode == 0
    store = open_store(settings_for(pg_env))
    try:
        store.append("user-ann", 0, [ev.UserRegistered("ann", "Ann", None, admin=True)],
                     {"actor": "setup"})
        head_hash = store.head_hash()
    finally:
        store.engine.dispose()
    tail = run_process(pg_env, "events", "tail")
    assert tail.returncode == 0, tail.stderr
    assert "user-ann@1  UserRegistered  actor=setup" in tail.stdout
    verify = run_process(pg_env, "events", "verify")  # a pipe: no progress bar on stderr
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.strip() == f"intact: 1 events, head hash {head_hash}"
    assert verify.stderr == ""


# --- keys -----------------------------------------------------------------------------


def test_keys_rotate_keeps_old_secrets_and_seals_new_ones_with_the_new_key(any_env):
    if any_env["OAUTHLEDGER_DATABASE_URL"]:
        assert run(any_env, "db", "upgrade").exit_code == 0
    settings = settings_for(any_env)
    store = open_store(settings)
    try:
        old_sealer = open_sealer(settings)  # creates the key file with its first key
        old_id = old_sealer.ring.active
        before_secret = "before-" + uuid.uuid4().hex
        store.append("resource-server-rs1", 0, [ev.ResourceServerCredentialCreated(
            "rs1", old_sealer.seal(before_secret))])

        rotated = run_process(any_env, "keys", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        new_id = rotated.stdout.strip()
        assert new_id and new_id != old_id
        assert f"active key is now {new_id} (was {old_id}" in rotated.stderr

        ring = load_key_ring(settings.secret_key_file, create=False)
        assert ring.active == new_id and set(ring.keys) == {old_id, new_id}
        assert (settings.secret_key_file.stat().st_mode & 0o777) == 0o600

        # A process that was running before the rotation follows the key file: its
        # next seal uses the new key, no restart.
        assert Sealer.key_id(old_sealer.seal("x")) == new_id
        new_sealer = open_sealer(settings)
        after_secret = "after-" + uuid.uuid4().hex
        store.append("resource-server-rs2", 0, [ev.ResourceServerCredentialCreated(
            "rs2", new_sealer.seal(after_secret))])
        first, second = (rec.event for rec in store.read_all(0, limit=2))
        assert new_sealer.open(first.secret_sealed) == before_secret  # old key still opens
        assert Sealer.key_id(first.secret_sealed) == old_id
        assert Sealer.key_id(second.secret_sealed) == new_id
        assert new_sealer.open(second.secret_sealed) == after_secret
        assert old_sealer.open(second.secret_sealed) == after_secret

        # A token secret derived before the rotation is still derived under the old key
        # (any process), and counts as a value under it.
        token_secret, ref = old_sealer.token_secret("Tok-derived-after-rotation")
        assert Sealer.key_id(ref) == new_id  # old_sealer follows the file
        early_secret, early_ref = Sealer(KeyRing(old_id, {old_id: ring.keys[old_id]})) \
            .token_secret("Tok-derived-before")
        assert new_sealer.open(early_ref) == early_secret
        assert new_sealer.open(ref) == token_secret
        store.append("token-Tok-derived-before", 0, [ev.RequestTokenIssued(
            token="Tok-derived-before", consumer_key="c", secret_sealed=early_ref,
            callback="oob", expires_at=2e9)])

        listed = run(any_env, "keys", "list", "--usage")
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.splitlines() == [
            f"{old_id}  sealed values: 2", f"{new_id}  active  sealed values: 1"]
        as_json = json.loads(run(any_env, "keys", "list", "--format", "json").stdout)
        assert as_json["active"] == new_id
        assert [k["id"] for k in as_json["keys"] if k["active"]] == [new_id]
        # Key material never leaves the key file, in any encoding.
        for key in ring.keys.values():
            for text in (base64.urlsafe_b64encode(key).decode().rstrip("="),
                         base64.b64encode(key).decode().rstrip("="), key.hex()):
                assert text not in listed.stdout + rotated.stdout + json.dumps(as_json)
    finally:
        store.engine.dispose()


def test_keys_rotate_creates_a_missing_key_file_and_list_reports_it(sqlite_env):
    missing = run(sqlite_env, "keys", "list")
    assert missing.exit_code == 1
    assert "does not exist" in missing.stderr and "keys rotate" in missing.stderr
    first = run(sqlite_env, "keys", "rotate")
    assert first.exit_code == 0 and "(new key file)" in first.stderr
    listed = run(sqlite_env, "keys", "list")
    assert listed.stdout.strip() == f"{first.stdout.strip()}  active"


def test_keys_list_flags_sealed_values_under_a_key_that_is_gone(sqlite_env):
    settings = settings_for(sqlite_env)
    store = open_store(settings)
    try:
        stranger = Sealer(load_key_ring(Path(sqlite_env["OAUTHLEDGER_DATA_DIR"]) / "other.json"))
        store.append("resource-server-rs9", 0, [ev.ResourceServerCredentialCreated(
            "rs9", stranger.seal("lost"))])
        run(sqlite_env, "keys", "rotate")
        listed = run(sqlite_env, "keys", "list", "--usage")
        assert listed.exit_code == 0
        assert f"{stranger.ring.active}  MISSING from the key file  sealed values: 1" in (
            listed.stdout)
    finally:
        store.engine.dispose()


def test_staged_rotation_then_activate(sqlite_env):
    """Several hosts: `rotate --stage` adds a key every host can open before any host
    seals with it; `activate` switches to it. A running sealer follows both steps."""
    settings = settings_for(sqlite_env)
    running = open_sealer(settings)  # creates the key file
    old_id = running.ring.active

    staged = run(sqlite_env, "keys", "rotate", "--stage")
    assert staged.exit_code == 0, staged.output
    new_id = staged.stdout.strip()
    assert new_id != old_id and f"oauthledger keys activate {new_id}" in staged.stderr
    assert run(sqlite_env, "keys", "list").stdout.splitlines() == [
        f"{old_id}  active", new_id]
    assert Sealer.key_id(running.seal("x")) == old_id  # staged: not used to seal yet
    other_host = open_sealer(settings)  # has the staged key: opens what it will seal
    assert new_id in other_host.ring.keys

    activated = run(sqlite_env, "keys", "activate", new_id)
    assert activated.exit_code == 0, activated.output
    assert f"active key is now {new_id} (was {old_id})" in activated.stderr
    sealed = running.seal("y")
    assert Sealer.key_id(sealed) == new_id and other_host.open(sealed) == "y"


@pytest.mark.parametrize(("setup", "key_id", "message"), [
    (True, "knotthere", "key 'knotthere' is not in the key file"),
    (False, "k1", "does not exist"),
])
def test_activate_refuses_with_one_line(sqlite_env, setup: bool, key_id: str,
                                        message: str) -> None:
    if setup:
        assert run(sqlite_env, "keys", "rotate").exit_code == 0
    before = settings_for(sqlite_env).secret_key_file
    content = before.read_text() if before.exists() else None
    result = run(sqlite_env, "keys", "activate", key_id)
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (before.read_text() if before.exists() else None) == content  # nothing changed
