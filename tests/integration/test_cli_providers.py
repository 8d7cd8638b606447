"""``oauthledger provider ...`` and ``oauthledger resource-server add --act-for-users``
in process (click's CliRunner) on a fresh PostgreSQL schema and the real Redis, against a
REAL service provider B (an oauthledger front end from tests/e2e/servers.py) for the
commands that need a connection. Every expected failure is one line on stderr and exit
1, never a traceback; no secret is ever printed (docs/cli.md, "Service providers")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from oauthledger.events.keys import KeyLayout
from oauthledger.events.state import ProviderState, ResourceServerState, provider_stream
from oauthledger.services import installation as inst
from oauthledger.services.cli import providers as cli_providers
from oauthledger.services.cli import resource_servers as cli_resource_servers
from oauthledger.services.cli.main import cli
from oauthledger.services.consumers import ConsumerInput, register_consumer
from tests.e2e import servers
from tests.integration.test_provider_api import (
    META,
    MYSELF,
    World,
    dead_url,
    make_world,
)

for _module in (cli_providers, cli_resource_servers):
    for _group in _module.COMMANDS:
        cli.add_command(_group)

RT = "https://photos.example.net/initiate"
AUTH = "https://photos.example.net/authorize"
AT = "https://photos.example.net/token"
SECRET = "photos-s3cret"


@pytest.fixture(scope="module")
def provider_b() -> Iterator[servers.Stack]:
    """B: a real oauthledger front end for this module."""
    stack = servers.make_stack(servers=1, worker=False)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def world(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout, tmp_path: Path,
          provider_b: servers.Stack) -> Iterator[World]:
    yield from make_world(pg_url, redis_client, key_layout, tmp_path, provider_b)


def run(w: World, *args: str, stdin: str | None = None) -> Result:
    """``oauthledger ARGS`` with A's environment."""
    return CliRunner().invoke(cli, list(args), env=w.env, input=stdin,
                              catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def fails(result: Result) -> str:
    """The one line an expected failure prints on stderr (exit 1, no traceback)."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oauthledger: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def hand_args(name: str = "Photos", *extra: str) -> list[str]:
    return ["provider", "add", name, "--consumer-key", "our-key", "--request-token-url", RT,
            "--authorize-url", AUTH, "--access-token-url", AT, *extra]


def test_add_by_hand_list_show_edit_remove(world: World) -> None:
    w = world
    assert ok(run(w, "provider", "list")).strip() == "no service providers"
    added = run(w, *hand_args("Photos", "--secret-stdin"), stdin=SECRET + "\n")
    assert ok(added).strip() == "service provider Photos added (HMAC-SHA1)"
    assert SECRET not in added.output
    line = fails(run(w, *hand_args("Photos", "--secret", "x")))
    assert "already exists" in line
    bad = fails(run(w, "provider", "add", "X", "--consumer-key", "a b", "--secret", "s",
                    "--request-token-url", "nope", "--authorize-url", AUTH,
                    "--access-token-url", AT))
    assert "--consumer-key:" in bad and "--request-token-url:" in bad
    assert "--secret: not with --base-url" in fails(run(
        w, "provider", "add", "X", "--base-url", "https://b.example", "--secret", "s"))
    assert "not both" in fails(run(w, *hand_args("X", "--secret", "s", "--secret-stdin"),
                                   stdin="t\n"))

    listed = ok(run(w, "provider", "list")).strip()
    assert listed == f"Photos\tHMAC-SHA1\t{RT}\t0 connection(s)"
    shown = run(w, "provider", "show", "Photos")
    view = json.loads(ok(shown))
    assert (view["name"], view["hasSharedSecret"], view["consumerKey"]) == (
        "Photos", True, "our-key")
    assert SECRET not in shown.output
    assert "no service provider named" in fails(run(w, "provider", "show", "Nope"))

    edited = ok(run(w, "provider", "edit", "Photos", "--description", "holiday photos"))
    assert edited.strip() == ("service provider Photos changed: description; its users' "
                              "connections stay")
    assert "nothing to change" in fails(run(w, "provider", "edit", "Photos"))
    assert "nothing changed" in ok(run(w, "provider", "edit", "Photos", "--description",
                                       "holiday photos"))
    rekeyed = run(w, "provider", "edit", "Photos", "--secret-stdin", stdin="new-s3cret\n")
    assert "changed: sharedSecret" in ok(rekeyed) and "new-s3cret" not in rekeyed.output
    to_rsa = ok(run(w, "provider", "edit", "Photos", "--use-rsa-key"))
    assert "signatureMethod" in to_rsa
    state, _ = w.deps.ledger.load(provider_stream("Photos"))
    assert isinstance(state, ProviderState) and state.secret_sealed is None
    assert inst.load_installation(w.deps.ledger) is not None  # the key pair RSA needs
    assert "--authorize-url:" in fails(run(w, "provider", "edit", "Photos",
                                           "--authorize-url", "nope"))
    assert "no service provider named" in fails(run(w, "provider", "edit", "Nope",
                                                    "--description", "x"))

    assert ok(run(w, "provider", "remove", "Photos")).strip() == (
        "service provider Photos removed; 0 user connection(s) dropped")
    assert "no service provider named" in fails(run(w, "provider", "remove", "Photos"))


def test_add_by_base_url_connect_call_drop_remove(world: World) -> None:
    w = world
    added = ok(run(w, "provider", "add", "B", "--base-url", w.b.url))
    info = inst.load_installation(w.deps.ledger)
    assert info is not None
    assert added.splitlines() == [
        f"service provider B added (RSA-SHA1, at {w.b.url})",
        "now add this installation as a consumer at B, by URL: this installation's base "
        "URL + /plugins/servlet/oauth/consumer-info (set OAUTHLEDGER_BASE_URL to have it "
        f"printed) (consumer key {info.key})"]
    # B registers A as a consumer, as its "add consumer by URL" would; alice connects.
    b = w.b.deps()
    register_consumer(b.ledger, b.sealer, info.key, ConsumerInput(
        name="A", public_key=info.public_key, signature_methods=["RSA-SHA1"]), META)
    assert ok(run(w, "provider", "connections", "B")).strip() == "no user is connected to B"
    b_alice = w.connect("alice")
    rows = ok(run(w, "provider", "connections", "B")).strip().splitlines()
    assert len(rows) == 1 and rows[0].startswith("alice\tconnected\tconnected 20")
    assert ok(run(w, "provider", "list")).strip().endswith("\t1 connection(s)")

    me = json.loads(ok(run(w, "provider", "call", "B", "GET", MYSELF, "--user", "alice")))
    assert me["name"] == b_alice and me["oauth"]["consumerKey"] == info.key
    shown = ok(run(w, "provider", "call", "B", "GET", MYSELF, "--user", "alice", "-i",
                   "-H", "Accept: application/json"))
    head, _, body = shown.partition("\n\n")
    assert head.splitlines()[0] == "HTTP 200"
    assert "content-type: application/json" in head.splitlines()
    assert json.loads(body)["name"] == b_alice
    # The provider's refusal is its answer: printed, exit 0 (as curl's).
    posted = ok(run(w, "provider", "call", "B", "POST", MYSELF, "--user", "alice", "-i",
                    "--data", '{"a": 1}', "-H", "Content-Type: application/json"))
    assert posted.splitlines()[0] == "HTTP 405"

    assert "bob is not connected to B" in fails(run(w, "provider", "call", "B", "GET", MYSELF,
                                                    "--user", "bob"))
    assert "no user named" in fails(run(w, "provider", "call", "B", "GET", MYSELF, "--user",
                                        "nobody"))
    assert "URL: must lie at" in fails(run(w, "provider", "call", "B", "GET",
                                           "https://evil.example/", "--user", "alice"))
    assert "METHOD:" in fails(run(w, "provider", "call", "B", "TRACE", MYSELF, "--user",
                                  "alice"))
    assert "'Name: value'" in fails(run(w, "provider", "call", "B", "GET", MYSELF, "--user",
                                        "alice", "-H", "no colon"))
    assert "ISO-8859-1" in fails(run(w, "provider", "call", "B", "GET", MYSELF, "--user",
                                     "alice", "-H", "X-Snow: \u2603"))
    assert "not both" in fails(run(w, "provider", "call", "B", "POST", MYSELF, "--user",
                                   "alice", "--data", "x", "--data-file", "-"))
    assert "no service provider named" in fails(run(w, "provider", "call", "Nope", "GET",
                                                    MYSELF, "--user", "alice"))

    # B unreachable: one line, nothing stored, the connection kept.
    dead = dead_url()
    assert "accessTokenUrl" in ok(run(w, "provider", "edit", "B", "--base-url", dead))
    before = w.deps.store.head()
    assert "could not be reached" in fails(run(w, "provider", "call", "B", "GET", MYSELF,
                                               "--user", "alice"))
    assert w.deps.store.head() == before
    assert w.connection("alice").status == "connected"
    ok(run(w, "provider", "edit", "B", "--base-url", w.b.url))
    assert json.loads(ok(run(w, "provider", "call", "B", "GET", MYSELF, "--user",
                             "alice")))["name"] == b_alice

    assert ok(run(w, "provider", "drop", "B", "alice")).strip() == (
        "alice's connection to B dropped")
    assert "alice has no connection to B" in fails(run(w, "provider", "drop", "B", "alice"))
    assert "not connected" in fails(run(w, "provider", "call", "B", "GET", MYSELF, "--user",
                                        "alice"))
    w.connect("alice")
    w.connect("bob")
    assert ok(run(w, "provider", "remove", "B")).strip() == (
        "service provider B removed; 2 user connection(s) dropped")
    # The stored token is forgotten with the provider.
    assert w.connection("alice").token_sealed is None


def test_call_data_file(world: World, tmp_path: Path) -> None:
    w = world
    w.link()
    w.connect("alice")
    data = tmp_path / "body.json"
    data.write_bytes(b'{"from": "a file"}')
    posted = ok(run(w, "provider", "call", "B", "PUT", MYSELF, "--user", "alice", "-i",
                    "--data-file", str(data), "-H", "Content-Type: application/json"))
    assert posted.splitlines()[0] == "HTTP 405"
    piped = ok(run(w, "provider", "call", "B", "GET", MYSELF, "--user", "alice",
                   "--data-file", "-"))
    assert json.loads(piped)["name"] == w.b_users["alice"]


def test_resource_server_add_act_for_users(world: World) -> None:
    w = world
    out = ok(run(w, "resource-server", "add", "reports", "--act-for-users"))
    lines = out.splitlines()
    assert lines[0] == "resource server reports added (may act for users through the call API)"
    assert lines[1].startswith("secret (shown once): ")
    assert ok(run(w, "resource-server", "add", "verifier")).splitlines()[0] == (
        "resource server verifier added")
    for server_id, acts in (("reports", True), ("verifier", False)):
        state, _ = w.deps.ledger.load(f"resource-server-{server_id}")
        assert isinstance(state, ResourceServerState) and state.act_for_users is acts
    assert "already exists" in fails(run(w, "resource-server", "add", "reports"))
