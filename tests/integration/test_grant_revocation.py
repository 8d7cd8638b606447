"""A grant revoked is revoked for good, on real PostgreSQL + Redis through the HTTP app:
an expired access token whose session handle could still renew it is access the user
gave, so the users' and admins' token pages and APIs list it as revocable, and every way
of taking access away (the user's page, the user's API, the admin API, disabling the
user, removing the consumer) leaves its session handle unable to renew
(docs/oauth.md, "Renewal"). Wrong verifiers are counted and burn the request token."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import falcon.testing
import pytest
from oauthlib.oauth1 import Client as OAuthClient

from oauthledger.events.expiry import sweep_expired
from oauthledger.events.state import TokenState, consumer_stream, token_stream
from oauthledger.services import dance
from oauthledger.services.users import disable_user, register_user
from tests.integration.test_app_frontend import (  # noqa: F401 - the fixture
    HOST,
    PASSWORD,
    SECRET,
    App,
    app,
    login,
)

ACCESS = "/plugins/servlet/oauth/access-token"
API = "/rest/oauthledger/1"
FORM = "application/x-www-form-urlencoded"
ROOT_PW = "root password"


@dataclass
class Grant:
    token: str
    secret: str
    handle: str


def expired_grant(srv: App, user: str = "alice") -> Grant:
    """A grant for ``user`` on consumer ``c1`` whose token the sweep marked expired: the
    session handle could still renew it."""
    deps = srv.deps
    consumer, _ = deps.ledger.load(consumer_stream("c1"))
    m = {"actor": "c1"}
    rt = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                   "oob", m)
    token, _ = deps.ledger.load(token_stream(rt.token))
    verifier = dance.decide(deps.ledger, deps.sealer, token, user, True, m)
    token, _ = deps.ledger.load(token_stream(rt.token))
    issued = dance.exchange(deps.ledger, deps.sealer, deps.settings, token, verifier, m)
    sweep_expired(deps.store, deps.read_model,
                  now=time.time() + deps.settings.access_token_ttl + 1)
    state, _ = deps.ledger.load(token_stream(issued.token))
    assert isinstance(state, TokenState) and state.status == "expired"
    return Grant(issued.token, issued.secret, issued.session_handle)


def renew(srv: App, g: Grant) -> falcon.testing.Result:
    """The consumer's signed renewal request (the handle in the signed form body)."""
    body = urlencode({"oauth_session_handle": g.handle})
    client = OAuthClient("c1", client_secret=SECRET, resource_owner_key=g.token,
                         resource_owner_secret=g.secret)
    _, headers, body = client.sign(HOST + ACCESS, "POST", body=body,
                                   headers={"Content-Type": FORM})
    return srv.client.simulate_post(ACCESS, headers=headers, body=body)


def problem(resp: falcon.testing.Result) -> str:
    return dict(parse_qsl(resp.text)).get("oauth_problem", "")


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def by_user_page(srv: App, g: Grant) -> None:
    _, cookies = login(srv)
    page = srv.client.simulate_get("/plugins/servlet/oauth/users/access-tokens",
                                   cookies=cookies)
    # The expired but renewable grant is listed with the active ones, revocable.
    active = page.text.split('id="my-tokens"', 1)[1].split("</table>", 1)[0]
    assert g.token in active and "renewable by the application until" in active
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = srv.client.simulate_post(
        "/plugins/servlet/oauth/users/access-tokens", cookies=cookies,
        headers={"Content-Type": FORM},
        body=urlencode({"csrf_token": csrf, "token": g.token}))
    assert done.status_code == 303 and "token-revoked" in done.headers["Location"]


def by_user_api(srv: App, g: Grant) -> None:
    mine = srv.client.simulate_get(f"{API}/users/me/access-tokens",
                                   headers=basic("alice", PASSWORD)).json["tokens"]
    row = next(r for r in mine if r["token"] == g.token)
    assert (row["status"], row["revocable"]) == ("expired", True)
    assert row["renewableUntil"] > time.time()
    resp = srv.client.simulate_delete(f"{API}/users/me/access-tokens/{g.token}",
                                      headers=basic("alice", PASSWORD))
    assert resp.status_code == 200 and resp.json["status"] == "revoked"
    assert resp.json["revocable"] is False


def by_admin_api(srv: App, g: Grant) -> None:
    resp = srv.client.simulate_delete(f"{API}/tokens/{g.token}", headers=basic("root", ROOT_PW))
    assert resp.status_code == 200 and resp.json["status"] == "revoked"


def by_admin_page(srv: App, g: Grant) -> None:
    _, cookies = login(srv, "root", ROOT_PW)
    page = srv.client.simulate_get("/plugins/servlet/oauth/admin/tokens", cookies=cookies)
    row = page.text.split(f'data-token="{g.token[:8]}"', 1)[1].split("</tr>", 1)[0]
    assert "renewable until" in row and "Revoke" in row
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = srv.client.simulate_post(
        "/plugins/servlet/oauth/admin/tokens", cookies=cookies,
        headers={"Content-Type": FORM}, body=urlencode({"csrf_token": csrf, "token": g.token}))
    assert done.status_code == 303 and "token-revoked" in done.headers["Location"]


def by_disabling_the_user(srv: App, g: Grant) -> None:
    # What `oauthledger user disable alice` runs.
    assert disable_user(srv.deps.ledger, "alice", {"actor": "root"}) == 1


def by_removing_the_consumer(srv: App, g: Grant) -> None:
    resp = srv.client.simulate_delete(f"{API}/consumers/c1", headers=basic("root", ROOT_PW))
    assert resp.status_code in (200, 204), resp.text
    # The same key and secret registered again are a new consumer.
    again = srv.client.simulate_post(
        f"{API}/consumers", headers=basic("root", ROOT_PW),
        json={"key": "c1", "name": "Client One again", "sharedSecret": SECRET,
              "signatureMethods": ["HMAC-SHA1"]})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("revoke", [by_user_page, by_user_api, by_admin_api, by_admin_page,
                                    by_disabling_the_user, by_removing_the_consumer])
def test_revoking_an_expired_grant_ends_its_renewal(app: App,  # noqa: F811
                                                    revoke: Callable[[App, Grant], None]
                                                    ) -> None:
    register_user(app.deps.ledger, "root", ROOT_PW, admin=True, meta={"actor": "t"})
    g = expired_grant(app)
    revoke(app, g)
    resp = renew(app, g)
    assert resp.status_code == 401, resp.text
    assert problem(resp) == "token_revoked"
    state, _ = app.deps.ledger.load(token_stream(g.token))
    assert state.status == "revoked"


def test_an_unrevoked_expired_grant_still_renews(app: App) -> None:  # noqa: F811
    """The control: the same grant, not revoked, renews (so the refusals above are the
    revocation's doing)."""
    g = expired_grant(app)
    resp = renew(app, g)
    assert resp.status_code == 200, resp.text
    assert dict(parse_qsl(resp.text))["oauth_token"] != g.token


def test_wrong_verifiers_burn_the_request_token(app: App) -> None:  # noqa: F811
    deps = app.deps
    consumer, _ = deps.ledger.load(consumer_stream("c1"))
    rt = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                   "oob", {"actor": "c1"})
    token, _ = deps.ledger.load(token_stream(rt.token))
    verifier = dance.decide(deps.ledger, deps.sealer, token, "alice", True, {"actor": "a"})

    def exchange(v: str) -> falcon.testing.Result:
        client = OAuthClient("c1", client_secret=SECRET, resource_owner_key=rt.token,
                             resource_owner_secret=rt.secret, verifier=v)
        _, headers, _ = client.sign(HOST + ACCESS, "POST")
        return app.client.simulate_post(ACCESS, headers=headers)

    for n in range(dance.MAX_VERIFIER_ATTEMPTS):
        resp = exchange(f"wrong-{n}")
        assert resp.status_code == 401 and problem(resp) == "token_rejected"
    resp = exchange(verifier)
    assert resp.status_code == 401 and problem(resp) == "token_rejected"
    assert "start the authorization again" in dict(parse_qsl(resp.text))["oauth_problem_advice"]
    types = [r.type for r in deps.store.read_stream(token_stream(rt.token))]
    assert types.count("VerifierRejected") == dance.MAX_VERIFIER_ATTEMPTS
    assert types[-1] == "RequestTokenBurned"
