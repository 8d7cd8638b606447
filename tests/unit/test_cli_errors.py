"""Expected failures of the audit commands end with one clear line and a non-zero status,
never a traceback (docs/design.md, "Errors that say why"); and the text form of an event
never shows a secret. No servers: the unreachable database is a refused port, files are
temporary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from oauthledger.events.sealing import KeyRing, Sealer
from oauthledger.services.cli import db as cli_db
from oauthledger.services.cli import events as cli_events
from oauthledger.services.cli import keys as cli_keys
from oauthledger.services.cli.events import summarize, text_line
from oauthledger.services.cli.main import cli

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
# Port 1 on loopback: nothing listens, the connection is refused at once.
UNREACHABLE = "postgresql://auditor:hunter2-secret@127.0.0.1:1/ledger"

for _group in (*cli_db.COMMANDS, *cli_events.COMMANDS, *cli_keys.COMMANDS):
    cli.add_command(_group)

COMMANDS = [
    ("events", "tail"), ("events", "tail", "--follow"), ("events", "verify"),
    ("events", "export"), ("events", "stats"), ("db", "upgrade"), ("db", "current"),
    ("keys", "list", "--usage"),
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """A temporary data directory and nothing else configured."""
    return {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": None,
            "OAUTHLEDGER_SECRET_KEY_FILE": None, "OAUTHLEDGER_ACCESS_TOKEN_TTL": None}


def run(env: dict[str, str | None], *args: str) -> Result:
    """Run the real root group in-process; an unexpected exception fails the test."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def one_line(result: Result) -> str:
    """The single stderr line of a failed command."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_unreachable_database_is_one_line_with_the_password_masked(env, args):
    if args[0] == "keys":  # --usage reads the log, so it needs a key file first
        assert run(env, "keys", "rotate").exit_code == 0
    line = one_line(run({**env, "OAUTHLEDGER_DATABASE_URL": UNREACHABLE}, *args))
    assert line.startswith("oauthledger: event store at postgresql+psycopg://auditor:***@127.0.0.1:1")
    assert "unavailable" in line
    assert "hunter2" not in line


def test_unreachable_database_as_a_real_process(env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    full.update({"OAUTHLEDGER_DATA_DIR": env["OAUTHLEDGER_DATA_DIR"],
                 "OAUTHLEDGER_DATABASE_URL": UNREACHABLE})
    proc = subprocess.run([str(OAUTHLEDGER), "events", "verify"], env=full,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "127.0.0.1:1" in proc.stderr and "hunter2" not in proc.stderr


@pytest.mark.parametrize("args", COMMANDS + [("keys", "rotate")], ids=" ".join)
def test_bad_settings_value_names_the_variable(env, args):
    line = one_line(run({**env, "OAUTHLEDGER_ACCESS_TOKEN_TTL": "banana"}, *args))
    assert line.startswith("oauthledger: OAUTHLEDGER_ACCESS_TOKEN_TTL:")
    assert "banana" in line


def test_bad_database_url_scheme_names_the_variable(env):
    line = one_line(run({**env, "OAUTHLEDGER_DATABASE_URL": "mysql://x@y/z"}, "events", "tail"))
    assert "OAUTHLEDGER_DATABASE_URL" in line


def test_unusable_data_directory(env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_line(run({**env, "OAUTHLEDGER_DATA_DIR": str(blocker / "data")}, "events", "tail"))
    assert "data directory" in line and str(blocker) in line


def test_malformed_key_file(env, tmp_path):
    key_file = tmp_path / "keys.json"
    key_file.write_text('{"active": "k1", "keys": {}}')
    bad = {**env, "OAUTHLEDGER_SECRET_KEY_FILE": str(key_file)}
    assert "lacks it" in one_line(run(bad, "keys", "list"))
    assert "lacks it" in one_line(run(bad, "keys", "rotate"))
    assert key_file.read_text() == '{"active": "k1", "keys": {}}'  # never overwritten


def test_after_and_last_together_is_a_usage_error(env):
    result = run(env, "events", "tail", "--after", "3", "--last", "2")
    assert result.exit_code == 2
    assert "either --after or --last" in result.stderr


# --- the text form never shows a secret -----------------------------------------------


def test_summary_shows_sealed_values_by_key_id_only():
    sealer = Sealer(KeyRing.generate())
    sealed = sealer.seal("hunter2")
    text = summarize({"key": "jira", "secret_sealed": sealed, "verifier_sealed": None})
    assert text == f"key=jira secret_sealed=<sealed:{sealer.ring.active}> verifier_sealed=null"
    assert sealed not in text


def test_summary_names_derived_token_secrets_by_key_id():
    sealer = Sealer(KeyRing.generate())
    _, ref = sealer.token_secret("AbCdEfGhIjKlMnOpQrStUv")
    text = summarize({"token": "AbCdEfGhIjKlMnOpQrStUv", "secret_sealed": ref})
    assert text == (f"token=AbCdEfGhIjKlMnOpQrStUv "
                    f"secret_sealed=<derived:{sealer.ring.active}>")


def test_summary_never_prints_a_sealed_field_that_holds_plaintext():
    # A secret that escaped sealing is what an audit must reveal, not what it prints.
    text = summarize({"secret_sealed": "hunter2", "changes": {"secret_sealed": "oops"}})
    assert text == "secret_sealed=<sealed:INVALID> changes.secret_sealed=<sealed:INVALID>"


def test_summary_nested_changes_hashes_and_long_text():
    sealer = Sealer(KeyRing.generate())
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 200 + "\n-----END PUBLIC KEY-----\n"
    text = summarize({
        "changes": {"secret_sealed": sealer.seal("s"), "name": "New name"},
        "password_hash": "$argon2id$v=19$m=65536$abc",
        "public_key": pem,
        "signature_methods": ["HMAC-SHA1", "RSA-SHA256"],
        "expires_at": 1.5,
    })
    assert f"changes.secret_sealed=<sealed:{sealer.ring.active}>" in text
    assert 'changes.name="New name"' in text
    assert "password_hash=<hash>" in text and "argon2" not in text
    assert "\n" not in text and "A" * 50 not in text
    assert "signature_methods=[HMAC-SHA1,RSA-SHA256]" in text
    assert "expires_at=1.5" in text


def test_text_line_shows_position_time_stream_type_actor_and_request():
    line = text_line({
        "position": 42, "stream_id": "token-abc", "stream_version": 3,
        "type": "AccessTokenRevoked", "schema_version": 1,
        "data": {"token": "abc", "by": "admin", "reason": "revoked"},
        "metadata": {"time": "2026-01-02T03:04:05.678901+00:00", "actor": "admin",
                     "request_id": "r-9"},
        "hash": "0" * 64,
    })
    assert line == ("     42  2026-01-02T03:04:05.678Z  token-abc@3  AccessTokenRevoked"
                    "  actor=admin  req=r-9  token=abc by=admin reason=revoked")
