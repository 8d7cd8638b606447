"""Two-legged requests act only as an existing, enabled user (docs/oauth.md, "Two-legged
requests and impersonation"): a name in ``xoauth_requestor_id`` and a consumer's
configured two-legged user alike. Unknown and disabled names get the same answer, so a
consumer cannot tell which accounts exist. Through the Falcon app (the protected
resource and the verify API), on PostgreSQL + the real Redis and on the embedded default
(SQLite + the in-process Redis-compatible store), with the projection complete and with
it incomplete (the store fallback)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import falcon.testing
import pytest
from oauthlib.oauth1 import Client

from oauthledger.events import catalog as ev
from oauthledger.events.projection import project_pending
from oauthledger.events.state import consumer_stream, user_stream
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from oauthledger.services.ledger import Change
from oauthledger.services.resource_servers import create_resource_server
from oauthledger.services.users import disable_user, register_user
from tests.conftest import embedded_deps_in, pg_deps

META = {"actor": "test"}
SECRET = "consumer-secret"
HOST = "http://falconframework.org"  # falcon.testing's default scheme and host
MYSELF = "/rest/api/2/myself"
VERIFY = "/rest/oauthledger/1/verify"
REQUESTOR = "xoauth_requestor_id"


@pytest.fixture(params=["postgresql", "embedded"])
def deps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deps]:
    """Users ``alice`` (active), ``dora`` (disabled) and ``svc``; consumers ``imp``
    (impersonation), ``robot`` (two-legged as ``svc``) and ``orphan`` (two-legged as a
    user that does not exist); a projection with a checkpoint, so Redis answers."""
    if request.param == "postgresql":
        ctx = pg_deps(request.getfixturevalue("pg_url"),
                      request.getfixturevalue("redis_client"),
                      request.getfixturevalue("key_layout"), tmp_path)
    else:
        ctx = embedded_deps_in(tmp_path)
    with ctx as d:
        for name in ("alice", "dora", "svc"):
            register_user(d.ledger, name, "a-long-password", meta=META)
        disable_user(d.ledger, "dora", META)
        register_consumer(d.ledger, d.sealer, "imp",
                          ConsumerInput(name="Imp", secret=SECRET, allow_impersonation=True), META)
        register_consumer(d.ledger, d.sealer, "robot",
                          ConsumerInput(name="Robot", secret=SECRET, two_legged_user="svc"), META)
        # The admin services refuse an unknown two-legged user; a consumer registered
        # before that check (or naming a user since lost) is written as an event.
        d.ledger.commit([Change(consumer_stream("orphan"), 0, None, [ev.ConsumerRegistered(
            key="orphan", name="Orphan", secret_sealed=d.sealer.seal(SECRET),
            signature_methods=("HMAC-SHA1",), three_legged=False,
            two_legged_user="nobody")])], META)
        project_pending(d.store, d.read_model)
        assert d.read_model.checkpoint() is not None
        yield d


@pytest.fixture
def app(deps: Deps) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(deps))


def signed_url(consumer: str, requestor: str | None, base: str = HOST + MYSELF
               ) -> tuple[str, dict[str, str]]:
    """A two-legged request signed by oauthlib: (the URL, its headers)."""
    url = base + (f"?{urlencode({REQUESTOR: requestor})}" if requestor is not None else "")
    uri, headers, _ = Client(consumer, client_secret=SECRET).sign(url)
    return uri, headers


def myself(app: falcon.testing.TestClient, consumer: str, requestor: str | None = None
           ) -> falcon.testing.Result:
    """GET the protected resource as ``consumer``, naming ``requestor`` if given."""
    uri, headers = signed_url(consumer, requestor)
    return app.simulate_get(MYSELF, query_string=urlsplit(uri).query, headers=headers)


def problem(resp: falcon.testing.Result) -> dict[str, str]:
    """The OAuth problem of a refusal, as its form-encoded body reports it."""
    return dict(parse_qsl(resp.text))


def assert_same_refusal(a: falcon.testing.Result, b: falcon.testing.Result) -> None:
    """Two refusals a consumer cannot tell apart: status, header and body."""
    assert a.status_code == b.status_code
    assert a.headers["WWW-Authenticate"] == b.headers["WWW-Authenticate"]
    assert a.text == b.text


def assert_requestor_refused(resp: falcon.testing.Result) -> None:
    assert resp.status_code == 400, resp.text
    p = problem(resp)
    assert p["oauth_problem"] == "parameter_rejected"
    assert p["oauth_parameters_rejected"] == REQUESTOR
    assert "does not name an active user" in p["oauth_problem_advice"]


def assert_two_legged_user_refused(resp: falcon.testing.Result) -> None:
    assert resp.status_code == 401, resp.text
    p = problem(resp)
    assert p["oauth_problem"] == "permission_denied"
    assert "two-legged user configured for this consumer is not an active user" in (
        p["oauth_problem_advice"])


def answers(app: falcon.testing.TestClient) -> None:
    """Every rule's answer; the same whichever copy (Redis or the store) answers."""
    ok = myself(app, "imp", "alice")
    assert ok.status_code == 200, ok.text
    assert ok.json["name"] == "alice" and ok.json["oauth"]["twoLegged"] is True
    ghost = myself(app, "imp", "ghost-user-that-does-not-exist")
    assert_requestor_refused(ghost)
    disabled = myself(app, "imp", "dora")
    assert_same_refusal(ghost, disabled)
    robot = myself(app, "robot")
    assert robot.status_code == 200, robot.text
    assert robot.json["name"] == "svc"
    assert_two_legged_user_refused(myself(app, "orphan"))


def test_only_active_users_may_be_named_or_configured(app: falcon.testing.TestClient) -> None:
    answers(app)
    # The enumeration probe: a refused name's answer does not echo anything that tells
    # the two cases apart, not even the name itself.
    assert "ghost" not in problem(myself(app, "imp", "ghost"))["oauth_problem_advice"]


def test_disabling_takes_effect_on_the_very_next_request(
        deps: Deps, app: falcon.testing.TestClient) -> None:
    """docs/design.md, "Read your writes": the disable's response is the last one that
    may see the account enabled."""
    assert myself(app, "imp", "svc").status_code == 200
    assert myself(app, "robot").status_code == 200
    orphan = myself(app, "orphan")
    disable_user(deps.ledger, "svc", META)
    assert_requestor_refused(myself(app, "imp", "svc"))
    assert_same_refusal(myself(app, "imp", "svc"), myself(app, "imp", "never-existed"))
    robot = myself(app, "robot")
    assert_two_legged_user_refused(robot)
    assert_same_refusal(robot, orphan)  # disabled and missing: one answer


def test_verify_api_applies_the_same_rule(deps: Deps, app: falcon.testing.TestClient) -> None:
    rs_secret = create_resource_server(deps.ledger, deps.sealer, "rs1", "test", META)
    auth = "Basic " + base64.b64encode(f"rs1:{rs_secret}".encode()).decode()

    def verify(consumer: str, requestor: str | None) -> dict[str, object]:
        uri, headers = signed_url(consumer, requestor, "https://rs.test/api/things")
        resp = app.simulate_post(VERIFY, headers={"Authorization": auth},
                                 json={"method": "GET", "url": uri, "headers": headers})
        assert resp.status_code == 200, resp.text
        return resp.json

    good = verify("imp", "alice")
    assert (good["valid"], good["user"], good["twoLegged"]) == (True, "alice", True)
    ghost, disabled = verify("imp", "ghost"), verify("imp", "dora")
    assert ghost["valid"] is False and ghost["oauth_problem"] == "parameter_rejected"
    assert ghost["params"] == {"oauth_parameters_rejected": REQUESTOR}
    assert ghost == disabled
    orphan = verify("orphan", None)
    assert (orphan["valid"], orphan["oauth_problem"]) == (False, "permission_denied")
    disable_user(deps.ledger, "svc", META)
    robot = verify("robot", None)
    assert robot["valid"] is False and robot["advice"] == orphan["advice"]


def test_store_fallback_gives_the_same_answers(deps: Deps,
                                               app: falcon.testing.TestClient) -> None:
    """docs/design.md, "Store fallback": while the projection has no checkpoint, users
    are read from the store, with the same answers."""
    rm = deps.read_model
    # With the projection complete the hot path trusts Redis: a user written to the
    # log only (not published) is not yet a user there.
    deps.store.append(user_stream("late"), 0, [ev.UserRegistered(
        name="late", display_name="Late", password_hash=None)])
    assert_requestor_refused(myself(app, "imp", "late"))
    # Redis flushed: no checkpoint, no entities.
    ns = rm.namespace()
    for key in list(rm.redis.scan_iter(f"{ns}:*")):
        rm.redis.delete(key)
    assert rm.checkpoint() is None
    answers(app)
    assert myself(app, "imp", "late").json["name"] == "late"
    # A disable recorded in the log only: the store is what answers.
    deps.store.append(user_stream("late"), None, [ev.UserDisabled(name="late")])
    assert_same_refusal(myself(app, "imp", "late"), myself(app, "imp", "ghost"))
