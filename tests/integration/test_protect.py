"""Any route of the app can be protected like /rest/api/2/myself: by the middleware
(``oauth_protected = True``) or by the ``require_oauth`` hook."""

from __future__ import annotations

import falcon
import falcon.testing
import pytest
from oauthlib.oauth1 import Client

from oauthledger.services import dance
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.http.protect import require_oauth
from oauthledger.services.users import register_user
from tests.conftest import pg_deps

META = {"actor": "test"}


class Marked:
    oauth_protected = True

    def on_get(self, req, resp):
        resp.media = {"user": req.context.oauth.user}


@pytest.fixture
def setup(pg_url, redis_client, key_layout, tmp_path):
    with pg_deps(pg_url, redis_client, key_layout, tmp_path) as deps:
        yield _protected_app(deps)


def _protected_app(deps: Deps) -> tuple[falcon.testing.TestClient, Client]:
    """The app with a marked and a hooked custom route, and an oauthlib client holding
    ``bob``'s access token for consumer ``c1``."""
    settings = deps.settings
    register_user(deps.ledger, "bob", "bob-password", meta=META)
    consumer, secret = register_consumer(
        deps.ledger, deps.sealer, "c1", ConsumerInput(name="C1", generate_secret=True), META)
    issued = dance.issue_request_token(deps.ledger, deps.sealer, settings, consumer, "oob", META)
    rt, _ = deps.ledger.load(f"token-{issued.token}")
    verifier = dance.decide(deps.ledger, deps.sealer, rt, "bob", True, META)
    rt, _ = deps.ledger.load(f"token-{issued.token}")
    access = dance.exchange(deps.ledger, deps.sealer, settings, rt, verifier, META)

    class Hooked:
        @falcon.before(require_oauth(deps))
        def on_get(self, req, resp):
            resp.media = {"user": req.context.oauth.user}

    app = create_app(deps)
    app.add_route("/custom/marked", Marked())
    app.add_route("/custom/hooked", Hooked())
    client = Client("c1", client_secret=secret, resource_owner_key=access.token,
                    resource_owner_secret=access.secret)
    return falcon.testing.TestClient(app), client


@pytest.mark.parametrize("path", ["/custom/marked", "/custom/hooked"])
def test_custom_routes_are_protected(setup, path):
    app, client = setup
    url = f"http://falconframework.org{path}"
    _, headers, _ = client.sign(url)
    ok = app.simulate_get(path, headers=headers)
    assert ok.status_code == 200 and ok.json == {"user": "bob"}
    replay = app.simulate_get(path, headers=headers)
    assert replay.status_code == 401
    assert 'oauth_problem="nonce_used"' in replay.headers["WWW-Authenticate"]
    anonymous = app.simulate_get(path)
    assert anonymous.status_code == 400
    assert "oauth_problem=parameter_absent" in anonymous.text
