"""Every command of the `oauthledger` command line, run as a real process against what
goes wrong first on a new host: (a) a database that does not answer, (b) a PostgreSQL
schema that was never migrated, (c) a Redis that does not answer (with a migrated,
populated store). Never a traceback; a failure exits non-zero with one
``oauthledger: ...`` line that names the fix (docs/design.md, "Errors that say why";
docs/cli.md, "Exit codes and errors").

The commands come from the click tree itself (after ``_register()``); each needs a row
in :data:`CASES` with plausible arguments, so a new command fails
:func:`test_every_command_has_a_case` until it is added here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import click.testing
import pytest
import redis
from click.testing import CliRunner

from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.settings import load_settings
from oauthledger.services import providers
from oauthledger.services.cli.main import FIELD_OPTIONS, _register, cli
from oauthledger.services.cli.preflight import PreflightError, check_dependencies
from oauthledger.services.deps import Deps
from oauthledger.services.users import register_user
from tests.conftest import REDIS_URL, embedded_deps_in, migrated_store
from tests.support import META, hmac_consumer

OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")
# Port 1 on loopback: nothing listens, every connection is refused at once.
DB_DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/x"
REDIS_DOWN = "redis://127.0.0.1:1/0"
# How long `serve` is watched for a traceback before it is stopped (it may be up).
SERVE_WATCH = 30

DB_DOWN_SCENARIO, UNMIGRATED, REDIS_DOWN_SCENARIO = "db-down", "unmigrated", "redis-down"
SCENARIOS = (DB_DOWN_SCENARIO, UNMIGRATED, REDIS_DOWN_SCENARIO)

# What a command must do in a scenario:
FAIL = "fail"  # exit 1, nothing on stdout, one `oauthledger: ...` line holding the fix
ANY = "any"  # may succeed; if it fails, one `oauthledger: ...` line (warnings aside)
REPORT = "report"  # a report (doctor, status): exit non-zero, the fix somewhere in it
SERVE = "serve"  # long-running: only no traceback in what it printed

DB_FIX = "OAUTHLEDGER_DATABASE_URL"
UPGRADE_FIX = "oauthledger db upgrade"
DEFAULT = {DB_DOWN_SCENARIO: (FAIL, DB_FIX), UNMIGRATED: (FAIL, UPGRADE_FIX),
           REDIS_DOWN_SCENARIO: (ANY, None)}
AUTH = ('Authorization: OAuth oauth_consumer_key="jira", oauth_signature_method="HMAC-SHA1", '
        'oauth_timestamp="1700000000", oauth_nonce="n1", oauth_version="1.0", '
        'oauth_signature="c2lnbmF0dXJl"')


@dataclass(frozen=True)
class Case:
    """Plausible arguments for one command, and what it must do per scenario (anything
    not in ``expect`` is :data:`DEFAULT`)."""

    args: tuple[str, ...] = ()
    stdin: str | None = None
    expect: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def expectation(self, scenario: str) -> tuple[str, str | None]:
        return self.expect.get(scenario, DEFAULT[scenario])


def _all(kind: str, fix: str | None) -> dict[str, tuple[str, str | None]]:
    return dict.fromkeys(SCENARIOS, (kind, fix))


_NO_STORE = {DB_DOWN_SCENARIO: (ANY, None), UNMIGRATED: (ANY, None)}
_REDIS = "OAUTHLEDGER_REDIS_URL"

CASES: dict[str, Case] = {
    "audit at": Case(("2026-01-01T00:00:00Z",)),
    "audit provider": Case(("Jira",)),
    "audit token": Case(("hh5s93j4",)),
    "audit user": Case(("alice",)),
    "beat": Case(expect=_all(FAIL, "OAUTHLEDGER_BROKER_URL")),
    "consumer add": Case(("jira2", "--name", "Jira 2", "--generate-secret")),
    # The failure history lives in Redis: the embedded default says where to look.
    "consumer failures": Case(("jira",), expect={
        DB_DOWN_SCENARIO: (FAIL, _REDIS), UNMIGRATED: (FAIL, _REDIS),
        REDIS_DOWN_SCENARIO: (FAIL, "Redis")}),
    "consumer list": Case(),
    "consumer remove": Case(("jira",)),
    "consumer reset-secret": Case(("jira",)),
    "consumer show": Case(("jira",)),
    "db current": Case(expect={UNMIGRATED: (ANY, None)}),  # prints "(none) ... upgrade"
    "db upgrade": Case(expect={UNMIGRATED: (ANY, None)}),  # migrates it
    "debug signature": Case(("--url", "https://a.example.com/rest/api/2/myself", "-H", AUTH)),
    "doctor": Case(expect={DB_DOWN_SCENARIO: (REPORT, DB_FIX),
                           UNMIGRATED: (REPORT, UPGRADE_FIX),
                           REDIS_DOWN_SCENARIO: (REPORT, _REDIS)}),
    "events export": Case(),
    "events stats": Case(),
    "events tail": Case(),
    "events verify": Case(("--no-progress",)),
    "keys activate": Case(("k00000000",), expect=_all(FAIL, "k00000000")),
    "keys list": Case(("--usage",)),
    "keys rotate": Case(expect=_NO_STORE),
    "projection rebuild": Case(expect=_all(FAIL, _REDIS)),
    "projection status": Case(expect=_all(FAIL, _REDIS)),
    "provider add": Case(("Photos", "--consumer-key", "our-key", "--secret", "photos-secret",
                          "--request-token-url", "https://photos.example.net/initiate",
                          "--authorize-url", "https://photos.example.net/authorize",
                          "--access-token-url", "https://photos.example.net/token")),
    "provider call": Case(("Jira", "--user", "alice", "GET", "/rest/api/2/myself")),
    "provider connections": Case(("Jira",)),
    "provider drop": Case(("Jira", "alice")),
    "provider edit": Case(("Jira", "--description", "The tracker")),
    "provider list": Case(),
    "provider remove": Case(("Jira",)),
    "provider show": Case(("Jira",)),
    "resource-server add": Case(("rs1",)),
    "resource-server remove": Case(("rs1",)),
    "serve": Case(("--bind", "127.0.0.1:{port}"), expect=_all(SERVE, None)),
    "status": Case(expect={DB_DOWN_SCENARIO: (REPORT, DB_FIX),
                           UNMIGRATED: (REPORT, UPGRADE_FIX)}),
    "user add": Case(("bob", "--password-stdin"), stdin="bob-password-1\n"),
    "user disable": Case(("alice",)),
    "user passwd": Case(("alice", "--password-stdin"), stdin="alice-password-2\n"),
    "worker": Case(expect=_all(FAIL, "OAUTHLEDGER_BROKER_URL")),
}


def command_paths() -> list[str]:
    """Every leaf command of the real root group, as "group command"."""
    _register()

    def walk(command: click.Command, path: list[str]) -> Iterator[str]:
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path)

    return list(walk(cli, []))


def test_every_command_has_a_case() -> None:
    paths = set(command_paths())
    assert not paths - set(CASES), f"add these commands to CASES: {sorted(paths - set(CASES))}"
    assert not set(CASES) - paths, f"no such commands: {sorted(set(CASES) - paths)}"


def test_field_options_name_real_commands() -> None:
    # The table that names refused fields by their options must not go stale.
    assert not set(FIELD_OPTIONS) - set(command_paths())


# --- the scenarios ------------------------------------------------------------------------


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without OAUTHLEDGER_* variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env.update(values)
    return env


def data_dir_with_key_file(tmp_path: Path) -> Path:
    """A data directory holding a key file: what fails is the database, not the
    directory."""
    data = tmp_path / "data"
    open_sealer(load_settings({"OAUTHLEDGER_DATA_DIR": str(data)}))
    return data


@pytest.fixture
def scenario_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    scenario = request.param
    data = data_dir_with_key_file(tmp_path)
    if scenario == DB_DOWN_SCENARIO:
        yield clean_env(OAUTHLEDGER_DATA_DIR=str(data), OAUTHLEDGER_DATABASE_URL=DB_DOWN)
    elif scenario == UNMIGRATED:
        yield clean_env(OAUTHLEDGER_DATA_DIR=str(data),
                        OAUTHLEDGER_DATABASE_URL=request.getfixturevalue("pg_url"))
    else:
        yield from populated_redis_down(request, data)


def populated_redis_down(request: pytest.FixtureRequest, data: Path) -> Iterator[dict[str, str]]:
    """A migrated store that holds user alice, consumer jira and provider Jira (written
    while Redis was up), for a command line that finds Redis down."""
    pg_url = request.getfixturevalue("pg_url")
    client: redis.Redis = request.getfixturevalue("redis_client")
    layout: KeyLayout = request.getfixturevalue("key_layout")
    values = {"OAUTHLEDGER_DATA_DIR": str(data), "OAUTHLEDGER_DATABASE_URL": pg_url,
              "OAUTHLEDGER_REDIS_PREFIX": layout.prefix}
    settings = load_settings({**values, "OAUTHLEDGER_REDIS_URL": REDIS_URL})
    with migrated_store(pg_url) as store:
        deps = Deps(settings=settings, store=store, redis=client, sealer=open_sealer(settings),
                    wake=lambda: None, layout=layout)
        register_user(deps.ledger, "alice", "alice-password-1", meta=META)
        hmac_consumer(deps, "jira")
        providers.add_provider(deps.ledger, deps.sealer, providers.ProviderInput(
            name="Jira", consumer_key="our-key", shared_secret="jira-secret",
            request_token_url="https://jira.example.com/rt",
            authorize_url="https://jira.example.com/authorize",
            access_token_url="https://jira.example.com/at"), META)
    yield clean_env(**values, OAUTHLEDGER_REDIS_URL=REDIS_DOWN)


@dataclass
class Outcome:
    returncode: int | None  # None: still running when it was stopped (serve)
    stdout: str
    stderr: str


def run(env: dict[str, str], case: Case, path: str, cwd: Path) -> Outcome:
    """``oauthledger PATH ARGS`` as a real process."""
    argv = [str(OAUTHLEDGER), *path.split(), *(a.format(port=free_port()) if "{port}" in a
                                               else a for a in case.args)]
    if path != "serve":
        proc = subprocess.run(argv, env=env, input=case.stdin, capture_output=True, text=True,
                              timeout=120, cwd=cwd)
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    # serve may come up (and stay up): watch it for a while, then stop its process
    # group (gunicorn and its workers), which this test started.
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=cwd,
                          start_new_session=True) as popen:
        try:
            out, err = popen.communicate(timeout=SERVE_WATCH)
            return Outcome(popen.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                out, err = popen.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                out, err = popen.communicate()
            return Outcome(None, out, err)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failure_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not warnings of a change that was made."""
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("oauthledger: warning: ")]


def check(outcome: Outcome, kind: str, fix: str | None) -> None:
    """Assert what ``kind`` demands of ``outcome``."""
    both = outcome.stdout + outcome.stderr
    assert "Traceback" not in both, both
    if kind == SERVE:
        return
    assert outcome.returncode != 2, f"a usage error: fix the case's arguments\n{both}"
    if kind == REPORT:
        assert outcome.returncode not in (0, None), both
        if fix:
            assert fix in both, both
        return
    if kind == ANY and outcome.returncode == 0:
        return
    assert outcome.returncode == 1, both
    lines = failure_lines(outcome.stderr)
    assert len(lines) == 1 and lines[0].startswith("oauthledger: "), outcome.stderr
    if kind == FAIL:
        assert outcome.stdout == "", outcome.stdout
    if fix:
        assert fix in lines[0], lines[0]


def _params() -> list[object]:
    params: list[object] = []
    for scenario in SCENARIOS:
        for path in sorted(CASES):
            params.append(pytest.param(scenario, path, id=f"{scenario}:{path}"))
    return params


@pytest.mark.parametrize(("scenario_env", "path"), _params(), indirect=["scenario_env"])
def test_no_traceback(scenario_env: dict[str, str], path: str, tmp_path: Path,
                      request: pytest.FixtureRequest) -> None:
    scenario = request.node.callspec.params["scenario_env"]
    case = CASES[path]
    kind, fix = case.expectation(scenario)
    check(run(scenario_env, case, path, tmp_path), kind, fix)


# --- a refused field is named by what the user typed ------------------------------------------


def in_process(env: dict[str, str | None], *args: str, stdin: str | None = None
               ) -> click.testing.Result:
    """The real root group in this process (its environment restored afterwards)."""
    _register()
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def refusal(result: click.testing.Result) -> str:
    """The one line of a refused command, without the ``oauthledger: `` prefix."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("oauthledger: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0][len("oauthledger: "):]


@pytest.fixture
def site(tmp_path: Path) -> dict[str, str | None]:
    """An embedded installation (no server needed) holding user alice, HMAC consumer
    jira and service provider Jira; the environment of a command line that uses it."""
    data = tmp_path / "data"
    with embedded_deps_in(data) as deps:
        register_user(deps.ledger, "alice", "alice-password-1", meta=META)
        hmac_consumer(deps, "jira")
        providers.add_provider(deps.ledger, deps.sealer, providers.ProviderInput(
            name="Jira", consumer_key="our-key", shared_secret="jira-secret",
            request_token_url="https://jira.example.com/rt",
            authorize_url="https://jira.example.com/authorize",
            access_token_url="https://jira.example.com/at"), META)
    return {"OAUTHLEDGER_DATA_DIR": str(data), "OAUTHLEDGER_DATABASE_URL": None,
            "OAUTHLEDGER_REDIS_URL": None, "OAUTHLEDGER_BROKER_URL": None,
            "OAUTHLEDGER_SECRET_KEY_FILE": None, "OAUTHLEDGER_BASE_URL": None}


HAND = ("--request-token-url", "https://photos.example.net/initiate", "--authorize-url",
        "https://photos.example.net/authorize", "--access-token-url",
        "https://photos.example.net/token")


@pytest.mark.parametrize(("args", "stdin", "line"), [
    (("consumer", "add", "a b", "--name", "A", "--generate-secret"), None,
     "KEY: must be 1-200 printable characters without spaces"),
    (("consumer", "add", "app", "--name", "App"), None,
     "--public-key, --secret or --generate-secret: give a public key (RSA) or a shared "
     "secret (HMAC)"),
    (("consumer", "add", "app", "--name", "App", "--generate-secret", "--callback",
      "not a url"), None, "--callback: must be an absolute http:// or https:// URL"),
    (("consumer", "add", "app", "--name", "App", "--secret", "short"), None,
     "--secret: must be 8-512 characters"),
    (("consumer", "add", "app", "--name", "App", "--generate-secret", "--signature-methods",
      "RSA-SHA1"), None, "--public-key: RSA signature methods need the consumer's public key"),
    (("consumer", "add", "app", "--name", "App", "--generate-secret", "--signature-methods",
      "FOO"), None, "--signature-methods: unknown method FOO"),
    (("consumer", "add", "app", "--name", "App", "--generate-secret", "--two-legged-user",
      "nobody"), None, "--two-legged-user: there is no user 'nobody'"),
    (("consumer", "reset-secret", "jira", "--secret-stdin"), "short\n",
     "the secret on standard input: must be 8-512 characters"),
    (("provider", "add", "Photos", "--consumer-key", "our-key", *HAND), None,
     "--secret, --secret-stdin or --use-rsa-key: give the shared secret the provider issued"),
    (("provider", "add", "Photos", "--consumer-key", "our-key", "--secret-stdin", *HAND),
     "x" * 513 + "\n", "--secret-stdin: give the shared secret the provider issued"),
    (("provider", "add", "Pho/tos", "--consumer-key", "k", "--secret", "s", *HAND), None,
     "NAME: must not contain /"),
    (("provider", "add", "Photos", "--consumer-key", "k", "--secret", "s",
      "--request-token-url", "ftp://photos.example.net/initiate", *HAND[2:]), None,
     "--request-token-url: must be an absolute http:// or https:// URL"),
    (("provider", "add", "Photos", "--base-url", "ftp://photos.example.net"), None,
     "--base-url: must be an absolute http:// or https:// URL"),
    (("provider", "edit", "Jira", "--authorize-url", "nope"), None,
     "--authorize-url: must be an absolute http:// or https:// URL"),
    (("provider", "call", "Jira", "--user", "alice", "FROB", "/rest/api/2/myself"), None,
     "METHOD: must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
    (("provider", "call", "Jira", "--user", "alice", "GET", "https://evil.example/x"), None,
     "URL: must lie at Jira's own address"),
    (("provider", "call", "Jira", "--user", "alice", "GET", "/x", "-H", "Bad(: 1"), None,
     "--header Bad(: is not a valid header name"),
    (("user", "add", "bad name!", "--password-stdin"), "a-long-password\n",
     "NAME: use 1-100 letters, digits, or . _ @ + -"),
    (("user", "add", "bob", "--password-stdin"), "short\n",
     "the password on standard input: must be at least 8 characters"),
    (("user", "passwd", "alice", "--password-stdin"), "short\n",
     "the password on standard input: must be at least 8 characters"),
    (("resource-server", "add", "bad id!"), None,
     "SERVER_ID: use 1-100 letters, digits, or . _ -"),
    (("debug", "signature", "--url", "not a url"), None, "--url: "),
    (("debug", "signature", "-X", "B A D", "--url", "https://a.example.com/x"), None,
     "--method: must be an HTTP method such as GET or POST"),
    (("debug", "signature", "--url", "https://a.example.com/x", "--remote-addr", "nope"),
     None, "--remote-addr: must be an IPv4 or IPv6 address"),
    (("debug", "signature", "--url", "https://a.example.com/x", "-H", "no colon"), None,
     "--header: line 1 is not 'Name: value'"),
])
def test_a_refused_field_is_named_by_its_option(site: dict[str, str | None],
                                                args: tuple[str, ...], stdin: str | None,
                                                line: str) -> None:
    assert refusal(in_process(site, *args, stdin=stdin)).startswith(line)


@pytest.mark.parametrize(("args", "line"), [
    (("--request-id", "bad id!"), "--request-id: is not a request id"),
    (("--request-id", "r-1", "--consumer", ""), "--consumer: must be a consumer key"),
])
def test_failure_history_fields_are_named_by_their_options(
        site: dict[str, str | None], key_layout: KeyLayout, args: tuple[str, ...],
        line: str) -> None:
    # The failure history lives in a shared Redis.
    env = {**site, "OAUTHLEDGER_REDIS_URL": REDIS_URL,
           "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix}
    assert refusal(in_process(env, "debug", "signature", *args)).startswith(line)


def test_every_command_that_names_fields_is_tested() -> None:
    # Each command of FIELD_OPTIONS has a case above (a new entry needs its test).
    source = Path(__file__).read_text()
    for path in FIELD_OPTIONS:
        words = ", ".join(f'"{w}"' for w in path.split())
        assert f"(({words}, " in source, f"no refusal test for {path!r}"


# --- audit: what the log does not know is one line and exit 1 ---------------------------------


@pytest.mark.parametrize(("args", "line"), [
    (("audit", "user", "nobody"), "no user 'nobody' in the event log"),
    (("audit", "token", "nope"), "no token 'nope' in the event log"),
    (("audit", "provider", "Nope"), "no service provider 'Nope' in the event log"),
    (("audit", "at", "1999-01-01T00:00:00Z"), "'1999-01-01T00:00:00Z' is before the first "
                                              "event (position 1, at "),
    (("audit", "at", "1733300000000"), "'1733300000000' is in the future (epoch seconds, "
                                       "not milliseconds)"),
    (("audit", "at", "nan"), "'nan' is in the future"),
    (("events", "tail", "--after", "99"), "position 99 is beyond the head of the event log "
                                          "(3): give --after 0..3"),
    (("events", "export", "--after", "4"), "position 4 is beyond the head of the event log"),
])
def test_what_the_log_does_not_know_is_refused(site: dict[str, str | None],
                                               args: tuple[str, ...], line: str) -> None:
    result = in_process(site, *args)
    assert result.stdout == ""
    assert refusal(result).startswith(line)


def test_what_the_log_knows_is_answered(site: dict[str, str | None]) -> None:
    known = in_process(site, "audit", "user", "alice")
    assert known.exit_code == 0, known.output
    assert known.stdout.startswith("alice made no grants\n")
    assert in_process(site, "audit", "at", "2999-01-01T00:00:00Z").exit_code == 1
    now = in_process(site, "audit", "at", str(time.time()))
    assert now.exit_code == 0 and "consumers (1):\n  jira  App jira" in now.stdout
    assert in_process(site, "events", "tail", "--after", "3").stdout == ""


def test_audit_at_on_an_empty_log(tmp_path: Path) -> None:
    with embedded_deps_in(tmp_path / "data"):
        pass
    env: dict[str, str | None] = {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
                                  "OAUTHLEDGER_DATABASE_URL": None}
    assert refusal(in_process(env, "audit", "at", "2025-01-01T00:00:00Z")) == (
        "the event log is empty: nothing existed at any moment yet")


# --- preflight against the real servers ------------------------------------------------------


def test_preflight_passes_when_store_and_redis_answer(pg_store, pg_url: str,
                                                      tmp_path: Path) -> None:
    check_dependencies(load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                                      "OAUTHLEDGER_DATABASE_URL": pg_url,
                                      "OAUTHLEDGER_REDIS_URL": REDIS_URL}))


def test_preflight_names_an_unmigrated_store(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as exc:
        check_dependencies(load_settings({"OAUTHLEDGER_DATA_DIR": str(tmp_path),
                                          "OAUTHLEDGER_DATABASE_URL": pg_url,
                                          "OAUTHLEDGER_REDIS_URL": REDIS_URL}))
    line = exc.value.format_message()
    assert "has no events table (run `oauthledger db upgrade` first)" in line
    assert "connect_timeout" not in line and "statement_timeout" not in line
