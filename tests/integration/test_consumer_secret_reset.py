"""Resetting a consumer's shared secret from the command line, the JSON API and the admin
page, on SQLite and PostgreSQL with the real Redis (docs/admin.md, "Consumers"): the new
secret is shown once; the old one is refused with signature_invalid on the very next
request, although the hot path had cached it opened; the consumer and its tokens stay."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import falcon.testing
import pytest
import redis
from click.testing import CliRunner, Result
from oauthlib.oauth1 import Client as OAuthClient

from oauthledger.events import catalog as ev
from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.settings import load_settings
from oauthledger.events.state import ConsumerState, TokenState, consumer_stream, token_stream
from oauthledger.services.cli import consumers as cli_consumers
from oauthledger.services.cli.main import cli
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import REDIS_URL, migrated_store
from tests.integration.test_admin_api_pages import Browser, csrf_of
from tests.support import CONSUMER_SECRET, META, grant, hmac_consumer, public_pem

for _group in cli_consumers.COMMANDS:
    cli.add_command(_group)

HOST = "http://falconframework.org"  # falcon.testing's default host
API = "/rest/oauthledger/1"
EDIT = "/plugins/servlet/oauth/admin/consumers/edit"
RESET = "/plugins/servlet/oauth/admin/consumers/reset-secret"
ADMIN_PW = "admin-password"


@dataclass
class World:
    """The app on the real Redis, an HMAC consumer ``app`` whose cached secret the hot
    path has already used, alice's access token, and the CLI's environment."""

    deps: Deps
    client: falcon.testing.TestClient
    cli_env: dict[str, str | None]
    token: str
    token_secret: str

    def myself(self, consumer_secret: str) -> falcon.testing.Result:
        """GET /rest/api/2/myself with alice's token, signed with ``consumer_secret``."""
        _, headers, _ = OAuthClient("app", client_secret=consumer_secret,
                                    resource_owner_key=self.token,
                                    resource_owner_secret=self.token_secret
                                    ).sign(HOST + "/rest/api/2/myself", "GET")
        return self.client.simulate_get("/rest/api/2/myself", headers=headers)

    def consumer(self) -> ConsumerState:
        state, _ = self.deps.ledger.load(consumer_stream("app"))
        assert isinstance(state, ConsumerState)
        return state

    def cli(self, *args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=self.cli_env, input=stdin,
                                  catch_exceptions=False)


@pytest.fixture
def world(store_url: str, redis_client: redis.Redis, key_layout: KeyLayout,
          tmp_path: Path) -> Iterator[World]:
    cli_env: dict[str, str | None] = {
        "OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": store_url,
        "OAUTHLEDGER_REDIS_URL": REDIS_URL, "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix,
        "OAUTHLEDGER_BROKER_URL": None, "OAUTHLEDGER_SECRET_KEY_FILE": None}
    settings = load_settings({k: v for k, v in cli_env.items() if v is not None})
    with migrated_store(store_url) as store:
        deps = Deps(settings=settings, store=store, redis=redis_client,
                    sealer=open_sealer(settings), wake=lambda: None, layout=key_layout)
        register_user(deps.ledger, "root", ADMIN_PW, admin=True, meta=META)
        register_user(deps.ledger, "alice", "alice-password", meta=META)
        issued = grant(deps, hmac_consumer(deps, "app"), "alice")
        w = World(deps, falcon.testing.TestClient(create_app(deps)), cli_env,
                  issued.token, issued.secret)
        # The hot path now holds the old secret opened, cached by consumer version.
        assert w.myself(CONSUMER_SECRET).status_code == 200
        yield w


def refused_for_signature(resp: falcon.testing.Result) -> None:
    assert resp.status_code == 401, resp.text
    assert dict(parse_qsl(resp.text))["oauth_problem"] == "signature_invalid"


def only_the_secret_changed(w: World, before: ConsumerState) -> None:
    """One ConsumerUpdated carrying only the sealed secret; the token still works."""
    after = w.consumer()
    assert after.version == before.version + 1
    assert after.secret_sealed != before.secret_sealed
    assert (after.name, after.signature_methods) == (before.name, before.signature_methods)
    last = w.deps.store.read_stream(consumer_stream("app"))[-1].event
    assert isinstance(last, ev.ConsumerUpdated) and set(last.changes) == {"secret_sealed"}
    token, _ = w.deps.ledger.load(token_stream(w.token))
    assert isinstance(token, TokenState) and token.status == "active"


def test_cli_generates_a_new_secret_and_the_old_one_fails_at_once(world: World) -> None:
    before = world.consumer()
    result = world.cli("consumer", "reset-secret", "app")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # Redis was told: no warning
    secret = result.stdout.split("shared secret (shown once): ", 1)[1].split()[0]
    assert len(secret) >= 32
    refused_for_signature(world.myself(CONSUMER_SECRET))
    assert world.myself(secret).status_code == 200
    only_the_secret_changed(world, before)
    assert world.deps.sealer.open(world.consumer().secret_sealed) == secret


def test_cli_sets_a_secret_from_stdin_and_refuses_bad_ones(world: World) -> None:
    before = world.consumer()
    given = "chosen-by-the-admin-1"
    result = world.cli("consumer", "reset-secret", "app", "--secret-stdin", stdin=given + "\n")
    assert result.exit_code == 0, result.output
    assert given not in result.output  # it was given, not generated: nothing to show
    refused_for_signature(world.myself(CONSUMER_SECRET))
    assert world.myself(given).status_code == 200
    only_the_secret_changed(world, before)

    register_consumer(world.deps.ledger, world.deps.sealer, "rsa-only",
                      ConsumerInput(name="RSA", public_key=public_pem()), META)
    for args, stdin, words in [
        (("app", "--secret-stdin"), "short\n", "8-512 characters"),
        (("app", "--secret-stdin"), given + "\n", "is the current secret"),
        (("app", "--secret-stdin"), "\n", "no secret on standard input"),
        (("nobody",), None, "no consumer with key 'nobody'"),
        (("rsa-only",), None, "has no shared secret"),
    ]:
        refused = world.cli("consumer", "reset-secret", *args, stdin=stdin)
        assert refused.exit_code == 1, (args, refused.output)
        lines = refused.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("oauthledger: ") and words in lines[0]
    assert world.myself(given).status_code == 200  # nothing changed


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_api_answers_the_new_secret_once(world: World) -> None:
    before = world.consumer()
    resp = world.client.simulate_post(f"{API}/consumer-secrets/app",
                                      headers=basic("root", ADMIN_PW))
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    secret = resp.json["sharedSecret"]
    assert resp.json["key"] == "app" and resp.json["version"] == before.version + 1
    refused_for_signature(world.myself(CONSUMER_SECRET))
    assert world.myself(secret).status_code == 200
    only_the_secret_changed(world, before)
    shown = world.client.simulate_get(f"{API}/consumers/app", headers=basic("root", ADMIN_PW))
    assert "sharedSecret" not in shown.json and secret not in shown.text

    given = world.client.simulate_post(f"{API}/consumer-secrets/app",
                                       json={"sharedSecret": "given-through-the-api"},
                                       headers=basic("root", ADMIN_PW))
    assert given.status_code == 200 and given.json["sharedSecret"] == "given-through-the-api"
    refused_for_signature(world.myself(secret))
    assert world.myself("given-through-the-api").status_code == 200

    for body, status, field in [({"sharedSecret": "short"}, 422, "sharedSecret"),
                                ({"sharedSecret": 42}, 422, "sharedSecret"),
                                ({"secret": "x" * 20}, 422, "secret")]:
        bad = world.client.simulate_post(f"{API}/consumer-secrets/app", json=body,
                                         headers=basic("root", ADMIN_PW))
        assert bad.status_code == status and field in bad.json["errors"], bad.text
    missing = world.client.simulate_post(f"{API}/consumer-secrets/nobody",
                                         headers=basic("root", ADMIN_PW))
    assert missing.status_code == 404
    assert world.client.simulate_post(f"{API}/consumer-secrets/app",
                                      headers=basic("alice", "alice-password")
                                      ).status_code == 403
    assert world.myself("given-through-the-api").status_code == 200  # nothing changed


def test_api_through_the_browser_session_needs_the_csrf_header(world: World) -> None:
    root = Browser(world.client, "root", ADMIN_PW)
    cookie = {"Cookie": f"oauthledger_session={root.cookie}"}
    refused = world.client.simulate_post(f"{API}/consumer-secrets/app", headers=cookie)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json["detail"]
    assert world.myself(CONSUMER_SECRET).status_code == 200  # nothing changed
    token = csrf_of(root.get(EDIT, key="app").text)
    done = world.client.simulate_post(f"{API}/consumer-secrets/app",
                                      headers={**cookie, "X-CSRF-Token": token})
    assert done.status_code == 200, done.text
    refused_for_signature(world.myself(CONSUMER_SECRET))
    assert world.myself(done.json["sharedSecret"]).status_code == 200


def test_page_button_shows_the_new_secret_once(world: World) -> None:
    before = world.consumer()
    root = Browser(world.client, "root", ADMIN_PW)
    page = root.get(EDIT, key="app")
    form = re.search(f'<form method="post" action="{RESET}">.*?</form>', page.text, re.S)
    assert form and 'name="csrf_token"' in form.group(0) and 'id="reset-secret"' in form.group(0)

    assert root.post(RESET, {"key": "app"}, csrf=False).status_code == 403
    assert world.myself(CONSUMER_SECRET).status_code == 200  # nothing changed

    done = root.post(RESET, {"key": "app"})
    assert done.status_code == 200, done.text
    secret = re.search(r'id="shared-secret"[^>]*value="([^"]+)"', done.text).group(1)
    assert "New shared secret" in done.text
    refused_for_signature(world.myself(CONSUMER_SECRET))
    assert world.myself(secret).status_code == 200
    only_the_secret_changed(world, before)
    assert secret not in root.get(EDIT, key="app").text  # shown once, never again

    assert root.post(RESET, {"key": "nobody"}).status_code == 404
    register_consumer(world.deps.ledger, world.deps.sealer, "rsa-only",
                      ConsumerInput(name="RSA", public_key=public_pem()), META)
    assert 'id="reset-secret"' not in root.get(EDIT, key="rsa-only").text
    refused = root.post(RESET, {"key": "rsa-only"})
    assert refused.status_code == 422 and 'id="e-secret"' in refused.text
