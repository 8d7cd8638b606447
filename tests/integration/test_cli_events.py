"""`oauthledger events ...` against real stores: SQLite in a temporary data directory and
a fresh PostgreSQL schema (migrated with `oauthledger db upgrade` first, as an operator
would). Commands run through click's CliRunner and, where the process matters (follow,
signals), as the installed `.venv/bin/oauthledger` script."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from oauthledger.events import catalog as ev
from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.connections import open_sealer, open_store
from oauthledger.events.migrate import head_revision
from oauthledger.events.schema import GENESIS_HASH
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import load_settings
from oauthledger.events.store import EventStore
from oauthledger.services.cli import db as cli_db
from oauthledger.services.cli import events as cli_events
from oauthledger.services.cli.main import cli

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")

for _group in (*cli_db.COMMANDS, *cli_events.COMMANDS):
    cli.add_command(_group)


def run(env: dict[str, str | None], *args: str) -> Result:
    """Run the real root group (with its one-line error handling) in-process."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_env(request, tmp_path: Path) -> dict[str, str | None]:
    """OAUTHLEDGER_* variables for one backend; PostgreSQL is migrated via the CLI."""
    env: dict[str, str | None] = {
        "OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
        "OAUTHLEDGER_DATABASE_URL": None,
        "OAUTHLEDGER_SECRET_KEY_FILE": None,
    }
    if request.param == "postgresql":
        env["OAUTHLEDGER_DATABASE_URL"] = request.getfixturevalue("pg_url")
        result = run(env, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert f"(none) -> {head_revision()}" in result.stdout
    return env


def settings_for(env: dict[str, str | None]):
    """The settings the CLI sees with ``env``."""
    return load_settings({k: v for k, v in env.items() if v is not None})


@pytest.fixture
def store(cli_env: dict[str, str | None]) -> Iterator[EventStore]:
    """The same store the CLI opens (embedded SQLite is created on first use)."""
    s = open_store(settings_for(cli_env))
    yield s
    s.engine.dispose()


@pytest.fixture
def sealer(cli_env: dict[str, str | None]) -> Sealer:
    """The sealer over the CLI's key file."""
    return open_sealer(settings_for(cli_env))


def populate(store: EventStore, sealer: Sealer) -> dict[str, Any]:
    """A small realistic log: a consumer, a user, one full dance. Returns the
    plaintext secrets (which must never appear in any output) and stream ids."""
    secret = "shared-" + uuid.uuid4().hex
    token_secret = "tsecret-" + uuid.uuid4().hex
    verifier = "verif-" + uuid.uuid4().hex
    store.append(
        "consumer-jira", 0,
        [ev.ConsumerRegistered(key="jira", name="Jira Server", secret_sealed=sealer.seal(secret),
                               signature_methods=("HMAC-SHA1",))],
        {"actor": "admin", "request_id": "req-1"},
    )
    store.append("user-bob", 0, [ev.UserRegistered("bob", "Bob", "$argon2id$v=19$abc")])
    store.append(
        "token-rt1", 0,
        [ev.RequestTokenIssued("rt1", "jira", sealer.seal(token_secret), "oob", 2e9)],
        {"actor": "consumer:jira", "request_id": "req-2"},
    )
    store.append("token-rt1", 1, [ev.TokenApproved("rt1", "bob", sealer.seal(verifier))],
                 {"actor": "bob", "request_id": "req-3"})
    return {
        "plaintexts": [secret, token_secret, verifier],
        "streams": {"consumer-jira": [1], "user-bob": [2], "token-rt1": [3, 4]},
    }


def tamper(store: EventStore, position: int, rechain: bool = False, **columns: Any) -> None:
    """Edit a stored row behind the store's back (the append-only triggers disabled),
    optionally recomputing every hash from that row on, as a careful forger would."""
    sets = ", ".join(f"{name} = :{name}" for name in columns)
    with store.engine.begin() as conn:
        if store.is_sqlite:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
        else:
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
        conn.execute(sa.text(f"UPDATE events SET {sets} WHERE position = :p"),
                     {**columns, "p": position})
        if rechain:
            rows = conn.exec_driver_sql(
                "SELECT position, stream_id, stream_version, type, schema_version, data, "
                "metadata, hash FROM events ORDER BY position"
            ).fetchall()
            prev = GENESIS_HASH
            for row in rows:
                h = row_hash(prev, *row[:7])
                if row[0] >= position:
                    conn.execute(sa.text("UPDATE events SET hash = :h WHERE position = :p"),
                                 {"h": h, "p": row[0]})
                prev = h
        if not store.is_sqlite:
            conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER events_append_only")


def assert_one_line_error(result: Result, *needles: str) -> None:
    """Exit 1, exactly one line on stderr naming ``needles``, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


# --- tail -----------------------------------------------------------------------------


def test_tail_prints_every_event_in_order_with_secrets_sealed(cli_env, store, sealer):
    facts = populate(store, sealer)
    result = run(cli_env, "events", "tail")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4]
    first = lines[0]
    assert "consumer-jira@1" in first and "ConsumerRegistered" in first
    assert "actor=admin" in first and "req=req-1" in first
    assert f"secret_sealed=<sealed:{sealer.ring.active}>" in first
    assert "key=jira" in first
    assert "password_hash=<hash>" in lines[1] and "argon2" not in result.stdout
    assert "token-rt1@2" in lines[3]
    assert f"verifier_sealed=<sealed:{sealer.ring.active}>" in lines[3]
    for plaintext in facts["plaintexts"]:
        assert plaintext not in result.stdout


def test_tail_filters_limits_and_writes_jsonl(cli_env, store, sealer):
    facts = populate(store, sealer)
    result = run(cli_env, "events", "tail", "--stream", "token-rt1", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["position"] for o in objs] == facts["streams"]["token-rt1"]
    assert {o["stream_id"] for o in objs} == {"token-rt1"}
    stored = {r.position: r for r in store.read_all(0)}
    for o in objs:
        rec = stored[o["position"]]
        assert o["hash"] == rec.hash and o["type"] == rec.type
        assert o["data"] == json.loads(rec.data) and o["metadata"] == json.loads(rec.metadata)

    after = run(cli_env, "events", "tail", "--after", "1", "--limit", "2")
    assert [int(x.split()[0]) for x in after.stdout.splitlines()] == [2, 3]
    last = run(cli_env, "events", "tail", "--last", "1")
    assert [int(x.split()[0]) for x in last.stdout.splitlines()] == [4]
    last_of_stream = run(cli_env, "events", "tail", "--stream", "token-rt1", "-n", "1")
    assert [int(x.split()[0]) for x in last_of_stream.stdout.splitlines()] == [4]
    nothing = run(cli_env, "events", "tail", "--stream", "no-such-stream")
    assert nothing.exit_code == 0 and nothing.stdout == ""


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put("")  # EOF


def _subprocess_env(env: dict[str, str | None]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    out.update({k: v for k, v in env.items() if v is not None})
    return out


def test_follow_sees_new_events_and_ends_cleanly_on_sigterm(cli_env, store, sealer):
    populate(store, sealer)
    proc = subprocess.Popen(
        [str(OAUTHLEDGER), "events", "tail", "--follow", "--format", "jsonl",
         "--interval", "0.1", "--after", "2"],
        env=_subprocess_env(cli_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        seen = [json.loads(lines.get(timeout=60))["position"] for _ in range(2)]
        assert seen == [3, 4]
        store.append("token-rt1", 2, [ev.RequestTokenExchanged("rt1", "at1")])
        store.append("token-at1", 0, [ev.AccessTokenRevoked("at1", by="admin")])
        new = [json.loads(lines.get(timeout=60)) for _ in range(2)]
        assert [(o["position"], o["type"]) for o in new] == [
            (5, "RequestTokenExchanged"), (6, "AccessTokenRevoked")]
    finally:
        proc.terminate()
        rc = proc.wait(timeout=60)
        stderr = proc.stderr.read()
    assert rc == 0, stderr
    assert "Traceback" not in stderr


def test_follow_with_stream_and_limit_stops_by_itself(cli_env, store, sealer):
    populate(store, sealer)
    proc = subprocess.Popen(
        [str(OAUTHLEDGER), "events", "tail", "-f", "--stream", "user-bob", "--limit", "2",
         "--interval", "0.1"],
        env=_subprocess_env(cli_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        assert lines.get(timeout=60).split()[0] == "2"
        store.append("user-carol", 0, [ev.UserRegistered("carol", "Carol", None)])
        store.append("user-bob", 1, [ev.UserDisabled("bob")])
        second = lines.get(timeout=60)
        assert second.split()[0] == "6" and "UserDisabled" in second
        assert proc.wait(timeout=60) == 0  # --limit 2 reached: exits on its own
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- verify ---------------------------------------------------------------------------


def test_verify_intact_chain(cli_env, store, sealer):
    populate(store, sealer)
    result = run(cli_env, "events", "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"intact: 4 events, head hash {store.head_hash()}"
    shown = run(cli_env, "events", "verify", "--progress")  # the bar, forced off a terminal
    assert shown.exit_code == 0 and "intact: 4 events" in shown.stdout


def test_verify_empty_log(cli_env, store):
    result = run(cli_env, "events", "verify")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"intact: 0 events, head hash {GENESIS_HASH}"


def test_edited_row_fails_verify_tail_and_export_at_its_position(cli_env, store, sealer):
    populate(store, sealer)
    row = next(store.read_all(2, limit=1))
    assert row.position == 3
    data = json.loads(row.data)
    data["consumer_key"] = "someone-else"
    tamper(store, 3, data=canonical_json(data))

    result = run(cli_env, "events", "verify")
    assert result.exit_code == 1
    assert result.stdout.startswith("broken at position 3: hash does not match")
    assert "2 events before it are intact" in result.stdout

    assert_one_line_error(run(cli_env, "events", "tail"), "position 3", "hash")
    assert_one_line_error(run(cli_env, "events", "export"), "position 3", "hash")
    # The rows before the bad one were printed before the stop.
    tail = run(cli_env, "events", "tail")
    assert [int(x.split()[0]) for x in tail.stdout.splitlines()] == [1, 2]
    # Starting mid-log, the first row printed is still checked against its predecessor.
    assert_one_line_error(run(cli_env, "events", "tail", "--after", "2"), "position 3")
    assert_one_line_error(run(cli_env, "events", "tail", "--stream", "token-rt1"), "position 3")
    # Auditors may still read a tampered log on purpose.
    loose = run(cli_env, "events", "tail", "--no-check-chain")
    assert loose.exit_code == 0 and "someone-else" in loose.stdout


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("data", '{"token": "rt1", "broken', "not JSON"),
        ("type", "TokenTeleported", "unknown event type 'TokenTeleported'"),
        ("metadata", "{oops", "metadata is not JSON"),
    ],
)
def test_corrupt_row_with_a_forged_chain_is_named_by_position(
    cli_env, store, sealer, column, value, reason
):
    populate(store, sealer)
    tamper(store, 3, rechain=True, **{column: value})

    result = run(cli_env, "events", "verify")
    assert result.exit_code == 1
    assert result.stdout.startswith("broken at position 3:")
    if column == "type":
        assert reason in result.stdout

    for args in (("events", "tail"), ("events", "tail", "--format", "jsonl"),
                 ("events", "export")):
        assert_one_line_error(run(cli_env, *args), "position 3", reason)


# --- export ---------------------------------------------------------------------------


def test_export_round_trip_and_offline_chain_check(cli_env, store, sealer, tmp_path):
    facts = populate(store, sealer)
    target = tmp_path / "audit.jsonl"
    result = run(cli_env, "events", "export", "--format", "jsonl", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert "exported 4 events (positions 1..4)" in result.stderr
    text = target.read_text()
    objs = [json.loads(line) for line in text.splitlines()]
    stored = list(store.read_all(0))
    assert len(objs) == len(stored) == 4
    prev = GENESIS_HASH
    for obj, rec in zip(objs, stored, strict=True):
        assert set(obj) == {"position", "stream_id", "stream_version", "type",
                            "schema_version", "data", "metadata", "hash"}
        assert (obj["position"], obj["stream_id"], obj["stream_version"], obj["type"],
                obj["schema_version"], obj["hash"]) == (
            rec.position, rec.stream_id, rec.stream_version, rec.type, rec.schema_version,
            rec.hash)
        # The export is enough to re-verify the chain offline: canonical JSON of the
        # parsed columns reproduces the hashed bytes.
        h = row_hash(prev, obj["position"], obj["stream_id"], obj["stream_version"],
                     obj["type"], obj["schema_version"], canonical_json(obj["data"]),
                     canonical_json(obj["metadata"]))
        assert h == obj["hash"]
        prev = h
    for plaintext in facts["plaintexts"]:
        assert plaintext not in text
    sealed = objs[0]["data"]["secret_sealed"]
    assert sealed.startswith(f"s1.{sealer.ring.active}.")
    assert sealer.open(sealed) in facts["plaintexts"]

    to_stdout = run(cli_env, "events", "export")
    assert to_stdout.exit_code == 0 and to_stdout.stdout == text
    tail_jsonl = run(cli_env, "events", "tail", "--format", "jsonl")
    assert tail_jsonl.stdout == text

    partial = tmp_path / "after2.jsonl"
    forced = run(cli_env, "events", "export", "--after", "2", "-o", str(partial), "--progress")
    assert forced.exit_code == 0, forced.output
    assert [json.loads(x)["position"] for x in partial.read_text().splitlines()] == [3, 4]


def test_failed_export_leaves_no_file(cli_env, store, sealer, tmp_path):
    populate(store, sealer)
    tamper(store, 4, data="{")
    target = tmp_path / "audit.jsonl"
    assert_one_line_error(run(cli_env, "events", "export", "-o", str(target)), "position 4")
    assert not target.exists()
    assert list(tmp_path.glob(".audit.jsonl.*")) == []


# --- stats ----------------------------------------------------------------------------


def test_stats_text_and_json(cli_env, store, sealer):
    facts = populate(store, sealer)
    rows = list(store.read_all(0))
    result = run(cli_env, "events", "stats", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["head_position"] == store.head() == len(rows)
    assert report["head_hash"] == store.head_hash()
    assert report["streams"] == len(facts["streams"])
    assert report["events_by_type"] == dict(Counter(r.type for r in rows))
    assert report["first_event_time"].startswith(rows[0].meta["time"][:19])
    assert report["last_event_time"].startswith(rows[-1].meta["time"][:19])

    text = run(cli_env, "events", "stats")
    assert text.exit_code == 0
    assert f"head position  {len(rows)}" in text.stdout
    assert f"head hash      {store.head_hash()}" in text.stdout
    assert "  TokenApproved" in text.stdout


def test_stats_on_empty_log(cli_env, store):
    report = json.loads(run(cli_env, "events", "stats", "--format", "json").stdout)
    assert report["head_position"] == 0 and report["streams"] == 0
    assert report["events_by_type"] == {} and report["first_event_time"] is None


def _run_on_terminal(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    """Run the script with stderr on a pseudo-terminal; returns (status, stdout, tty text)."""
    import pty

    master, slave = pty.openpty()
    full = {**_subprocess_env(env), "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen([str(OAUTHLEDGER), *args], env=full, stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read()
    return proc.wait(timeout=60), stdout, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_only(cli_env, store, sealer, tmp_path):
    populate(store, sealer)
    rc, stdout, tty = _run_on_terminal(cli_env, "events", "verify")
    assert rc == 0 and stdout.startswith("intact: 4 events")
    assert "verifying" in tty and "4/4" in tty

    target = tmp_path / "out.jsonl"
    rc, _stdout, tty = _run_on_terminal(cli_env, "events", "export", "-o", str(target))
    assert rc == 0 and "exporting" in tty and "4/4" in tty
    assert len(target.read_text().splitlines()) == 4

    # Export to stdout: the data is the output, no bar even on a terminal.
    rc, stdout, tty = _run_on_terminal(cli_env, "events", "export")
    assert rc == 0 and len(stdout.splitlines()) == 4 and "exporting" not in tty


# --- docs/cli.md ----------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_audit_command_is_documented():
    from oauthledger.services.cli import keys as cli_keys

    text = DOC.read_text()
    for group in (*cli_events.COMMANDS, *cli_db.COMMANDS, *cli_keys.COMMANDS):
        for name in group.commands:
            assert f"## `oauthledger {group.name} {name}`" in text or (
                f"`oauthledger {group.name} {name}`" in text), (group.name, name)


def test_documented_examples_run(tmp_path, monkeypatch):
    """Every `$ oauthledger ...` example in docs/cli.md runs (status 0) on an intact log."""
    import shlex

    from oauthledger.services.cli import keys as cli_keys

    for group in cli_keys.COMMANDS:
        cli.add_command(group)
    env: dict[str, str | None] = {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
                                  "OAUTHLEDGER_DATABASE_URL": None,
                                  "OAUTHLEDGER_SECRET_KEY_FILE": None}
    settings = settings_for(env)
    store = open_store(settings)
    sealer = open_sealer(settings)
    populate(store, sealer)
    store.append("token-hh5s93j4", 0, [ev.RequestTokenIssued(
        "hh5s93j4", "jira", sealer.seal("s"), "oob", 2e9)])
    monkeypatch.chdir(tmp_path)
    examples = [line[len("$ oauthledger "):] for line in DOC.read_text().splitlines()
                if line.startswith("$ oauthledger ")]
    assert len(examples) >= 10
    staged = None
    for example in examples:
        args = shlex.split(example, comments=True)
        if "--follow" in args:
            args.remove("--follow")  # its backlog, without waiting for more
        if args[:2] == ["keys", "activate"] and staged:
            args[2] = staged  # key ids are random: activate the one the example staged
        result = run(env, *args)
        assert result.exit_code == 0, (example, result.output)
        if args[:2] == ["keys", "rotate"]:
            staged = result.stdout.strip()
    assert (tmp_path / "audit.jsonl").exists()
    store.engine.dispose()
