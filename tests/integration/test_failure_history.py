"""Each consumer's failure history through the real app (docs/admin.md, "Failure
history"), on the embedded dependencies (SQLite and the in-process store) and on
PostgreSQL with the real Redis: refused resource calls and dance steps (request token,
access token, renewal) appear with their fields, and the observers' ``Refusal`` names only
registered consumers; the accepted path writes nothing to the history; the consumer's
page, the JSON API and ``oauthledger consumer failures`` show them; the signature
debugger runs on a refusal by its request id (API, page, CLI); no secret anywhere."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.testing
import pytest
import redis
from click.testing import CliRunner
from oauthlib.oauth1 import Client

from oauthledger.events.failures import ACCEPTED, hour_of
from oauthledger.events.keys import KeyLayout
from oauthledger.events.settings import load_settings
from oauthledger.services.cli import consumers as cli_consumers
from oauthledger.services.cli import debug as cli_debug
from oauthledger.services.cli.main import cli
from oauthledger.services.deps import Deps, build_deps
from oauthledger.services.failures import failure_history
from oauthledger.services.http.app import create_app
from oauthledger.services.http.outcome import Refusal
from oauthledger.services.resource_servers import create_resource_server
from oauthledger.services.users import register_user
from tests.conftest import REDIS_URL, embedded_deps_in, pg_deps
from tests.integration.test_admin_api_pages import Browser
from tests.support import CONSUMER_SECRET, META, approved_request_token, grant, hmac_consumer

API = "/rest/oauthledger/1"
HOST = "http://falconframework.org"  # what falcon.testing's requests rebuild to
RESOURCE = f"{HOST}/rest/api/2/myself"
REQUEST_TOKEN = f"{HOST}/plugins/servlet/oauth/request-token"
ACCESS_TOKEN = f"{HOST}/plugins/servlet/oauth/access-token"
EDIT = "/plugins/servlet/oauth/admin/consumers/edit"
DEBUG_PAGE = "/plugins/servlet/oauth/admin/consumers/debug-signature"
ADMIN_PW = "admin-password"
FORM = "application/x-www-form-urlencoded"

for group in (cli_consumers.consumer, cli_debug.debug):
    if group.name not in cli.commands:
        cli.add_command(group)


class Capture:
    """A middleware that keeps what the observers read (services/http/outcome.py)."""

    def __init__(self) -> None:
        self.refusals: list[Refusal | None] = []

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        self.refusals.append(req.context.get("refusal"))


@dataclass
class Site:
    deps: Deps
    client: falcon.testing.TestClient
    capture: Capture
    grant: Any
    secrets: list[str] = field(default_factory=list)

    def get(self, url: str, headers: dict[str, str]) -> falcon.testing.Result:
        return self.client.simulate_get(url[len(HOST):], headers=headers)

    def post(self, url: str, headers: dict[str, str], body: str = "") -> falcon.testing.Result:
        return self.client.simulate_post(url[len(HOST):], headers=headers, body=body)

    def report(self, key: str = "app") -> dict[str, Any]:
        return failure_history(self.deps).consumer_report(key)

    def raw_history(self, key: str = "app") -> str:
        return json.dumps([x.decode() for x in self.deps.redis.lrange(
            self.deps.layout.failure_history(key), 0, -1)])


def make_site(deps: Deps) -> Site:
    register_user(deps.ledger, "root", ADMIN_PW, admin=True, meta=META)
    register_user(deps.ledger, "bob", None, meta=META)
    consumer = hmac_consumer(deps, "app", signature_methods=["HMAC-SHA1", "PLAINTEXT"],
                             allow_plaintext_over_http=True)
    issued = grant(deps, consumer, "bob")
    app = create_app(deps)
    capture = Capture()
    app.add_middleware(capture)
    return Site(deps, falcon.testing.TestClient(app), capture, issued,
                [CONSUMER_SECRET, issued.secret, issued.session_handle])


@pytest.fixture(params=["embedded", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "embedded":
        with embedded_deps_in(tmp_path) as deps:
            yield make_site(deps)
        return
    pg_url = request.getfixturevalue("pg_url")
    redis_client = request.getfixturevalue("redis_client")
    key_layout = request.getfixturevalue("key_layout")
    with pg_deps(pg_url, redis_client, key_layout, tmp_path) as deps:
        yield make_site(deps)


def client_for(site: Site, **kw: Any) -> Client:
    args = {"client_secret": CONSUMER_SECRET, "resource_owner_key": site.grant.token,
            "resource_owner_secret": site.grant.secret, **kw}
    return Client("app", **args)


def answer(resp: falcon.testing.Result) -> dict[str, str]:
    return dict(parse_qsl(resp.text))


def no_secret_in(site: Site, *texts: str) -> None:
    for text in texts:
        for secret in site.secrets:
            assert secret not in text


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ADMIN = basic("root", ADMIN_PW)


# -- what is recorded ------------------------------------------------------------------------


def test_a_refused_resource_call_is_recorded_with_its_fields(site: Site) -> None:
    # The classic mistake: signed with the consumer secret only.
    without = Client("app", client_secret=CONSUMER_SECRET,
                     resource_owner_key=site.grant.token)
    _, headers, _ = without.sign(RESOURCE + "?expand=groups")
    resp = site.client.simulate_get("/rest/api/2/myself", params={"expand": "groups"},
                                    headers=headers)
    assert resp.status_code == 401
    rid = resp.headers["X-Request-Id"]
    report = site.report()
    assert report["total"] == 1
    entry = report["failures"][0]
    sent = dict(re.findall(r'(\w+)="([^"]*)"', headers["Authorization"]))
    assert entry["requestId"] == rid and entry["route"] == "/rest/api/2/myself"
    assert (entry["step"], entry["method"]) == ("resource", "GET")
    assert (entry["oauthProblem"], entry["status"]) == ("signature_invalid", 401)
    assert entry["advice"] == answer(resp)["oauth_problem_advice"]
    assert entry["url"] == RESOURCE + "?expand=groups"
    assert entry["baseString"].startswith(
        "GET&http%3A%2F%2Ffalconframework.org%2Frest%2Fapi%2F2%2Fmyself&expand%3Dgroups%26")
    assert entry["signatureMethod"] == "HMAC-SHA1"
    assert entry["signature"] == base64.b64encode(base64.b64decode(
        sent["oauth_signature"].replace("%3D", "=").replace("%2B", "+").replace("%2F", "/"))
    ).decode()
    assert entry["token"] == site.grant.token
    assert isinstance(entry["skewSeconds"], int) and abs(entry["skewSeconds"]) <= 5
    assert entry["debuggable"] is True and "request" not in entry
    assert report["byProblem"][0] | {"latest": None, "advice": None} == {
        "oauthProblem": "signature_invalid", "lastHour": 1, "lastDay": 1, "kept": 1,
        "latest": None, "advice": None}
    assert report["hours"][-1]["refused"] == 1
    # The observers' Refusal names the registered consumer.
    assert site.capture.refusals[-1] == Refusal("signature_invalid", "app", entry["advice"])
    no_secret_in(site, site.raw_history())


def test_the_timestamp_skew_is_recorded(site: Site) -> None:
    stale = str(int(time.time()) - 1000)
    _, headers, _ = client_for(site, timestamp=stale).sign(RESOURCE)
    resp = site.get(RESOURCE, headers)
    assert 'oauth_problem="timestamp_refused"' in resp.headers["WWW-Authenticate"]
    entry = site.report()["failures"][0]
    assert entry["oauthProblem"] == "timestamp_refused"
    assert -1005 <= entry["skewSeconds"] <= -995


def test_dance_steps_are_recorded_without_their_secrets(site: Site) -> None:
    d = site.deps
    consumer, _ = d.ledger.load("consumer-app")
    # Request token, signed with a wrong consumer secret.
    bad = Client("app", client_secret="not-the-secret", callback_uri="oob")
    _, headers, body = bad.sign(REQUEST_TOKEN, "POST")
    resp = site.post(REQUEST_TOKEN, headers)
    assert resp.status_code == 401
    # Access token: the right verifier, a wrong token secret.
    token, verifier = approved_request_token(d, consumer, "bob")
    site.secrets.append(verifier)
    _, headers, _ = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key=token.token,
                           resource_owner_secret="wrong", verifier=verifier).sign(
        ACCESS_TOKEN, "POST")
    assert site.post(ACCESS_TOKEN, headers).status_code == 401
    # Renewal with the real session handle in the form body, signed with a wrong secret.
    body = f"oauth_session_handle={site.grant.session_handle}"
    _, headers, _ = client_for(site, resource_owner_secret="wrong").sign(
        ACCESS_TOKEN, "POST", body=body, headers={"Content-Type": FORM})
    assert site.post(ACCESS_TOKEN, headers, body).status_code == 401

    entries = site.report()["failures"]
    assert [(e["step"], e["route"], e["oauthProblem"]) for e in entries] == [
        ("renewal", "/plugins/servlet/oauth/access-token", "signature_invalid"),
        ("access-token", "/plugins/servlet/oauth/access-token", "signature_invalid"),
        ("request-token", "/plugins/servlet/oauth/request-token", "signature_invalid"),
    ]
    assert all(e["method"] == "POST" for e in entries)
    assert "oauth_session_handle%3D%2528hidden%2529" in entries[0]["baseString"]
    assert "oauth_verifier%3D%2528hidden%2529" in entries[1]["baseString"]
    assert entries[1]["token"] == token.token
    assert [r.consumer_key for r in site.capture.refusals[-3:]] == ["app"] * 3
    no_secret_in(site, site.raw_history())


def test_unknown_consumers_are_only_counted(site: Site) -> None:
    _, headers, _ = Client("nobody-" + "x" * 40, client_secret="s").sign(RESOURCE)
    resp = site.get(RESOURCE, headers)
    assert 'oauth_problem="consumer_key_unknown"' in resp.headers["WWW-Authenticate"]
    assert site.capture.refusals[-1] == Refusal(
        "consumer_key_unknown", None, answer(resp)["oauth_problem_advice"])
    # No OAuth parameters at all, and a GET where the dance wants POST.
    assert site.client.simulate_get("/rest/api/2/myself").status_code == 400
    assert site.client.simulate_get("/plugins/servlet/oauth/request-token").status_code == 400
    assert site.capture.refusals[-1].consumer_key is None
    prefix = site.deps.layout.prefix
    assert list(site.deps.redis.scan_iter(f"{prefix}:fh:*")) == []
    assert failure_history(site.deps).unattributed_last_day() == 3
    root = Browser(site.client, "root", ADMIN_PW)
    listing = root.get("/plugins/servlet/oauth/admin")
    assert 'id="unattributed"' in listing.text and "3 refused signed requests" in listing.text


def test_the_accepted_path_writes_nothing_to_the_history(site: Site) -> None:
    for _ in range(3):
        _, headers, _ = client_for(site).sign(RESOURCE)
        resp = site.get(RESOURCE, headers)
        assert resp.status_code == 200, resp.text
        assert site.capture.refusals[-1] is None
    prefix = site.deps.layout.prefix
    r = site.deps.redis
    assert list(r.scan_iter(f"{prefix}:fh:*")) == []
    assert list(r.scan_iter(f"{prefix}:fc:*")) == []  # counted in memory only
    history = failure_history(site.deps)
    assert history.accepted.flush() == 3
    counts = r.hgetall(site.deps.layout.failure_counts(hour_of(time.time()), "app"))
    assert counts == {ACCEPTED.encode(): b"3"}
    assert list(r.scan_iter(f"{prefix}:fh:*")) == []
    assert site.report()["hours"][-1] == {**site.report()["hours"][-1], "accepted": 3,
                                          "refused": 0}


# -- where it is shown -------------------------------------------------------------------------


def refuse_twice(site: Site) -> list[str]:
    """Two refused resource calls (no token secret; then a stale timestamp): their ids."""
    without = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key=site.grant.token)
    ids = []
    for client in (without, client_for(site, timestamp=str(int(time.time()) - 900))):
        _, headers, _ = client.sign(RESOURCE)
        ids.append(site.get(RESOURCE, headers).headers["X-Request-Id"])
    return ids


def test_the_consumers_page_shows_the_history(site: Site) -> None:
    ids = refuse_twice(site)
    _, headers, _ = client_for(site).sign(RESOURCE)
    assert site.get(RESOURCE, headers).status_code == 200
    failure_history(site.deps).accepted.flush()
    root = Browser(site.client, "root", ADMIN_PW)
    page = root.get(EDIT, key="app")
    assert page.status_code == 200
    section = page.text[page.text.index('id="failures"'):]
    rows = re.findall(r'<tr data-request-id="([^"]+)" data-problem="([^"]+)">', section)
    assert rows == [(ids[1], "timestamp_refused"), (ids[0], "signature_invalid")]
    problems = re.findall(r'<tr data-problem="([^"]+)"><td[^>]*><code>[^<]+</code></td>\s*'
                          r'<td[^>]*>(\d+)</td><td[^>]*>(\d+)</td>', section)
    assert sorted(problems) == [("signature_invalid", "1", "1"), ("timestamp_refused", "1", "1")]
    hours = re.findall(r'<g class="hour" data-start="(\d+)" data-accepted="(\d+)" '
                       r'data-refused="(\d+)">', section)
    assert len(hours) == 24 and hours[-1][1:] == ("1", "2")
    assert '<rect class="refused"' in section and '<rect class="accepted"' in section
    assert "style=" not in section  # the CSP forbids inline styles
    assert f"requestId={ids[0]}&amp;consumer=app" in section
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    no_secret_in(site, page.text)


def test_the_json_api_gives_the_same(site: Site) -> None:
    ids = refuse_twice(site)
    resp = site.client.simulate_get(f"{API}/consumer-failures/app", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    body = resp.json
    assert [e["requestId"] for e in body["failures"]] == ids[::-1]
    assert body["removed"] is False and body["total"] == 2
    assert body["keeps"] == {"entries": 200, "retentionSeconds": 7 * 86400}
    assert {g["oauthProblem"] for g in body["byProblem"]} == {"signature_invalid",
                                                               "timestamp_refused"}
    assert len(body["hours"]) == 24 and body["hours"][-1]["refused"] == 2
    assert all("request" not in e for e in body["failures"])
    one = site.client.simulate_get(f"{API}/consumer-failures/app", params={"limit": "1"},
                                   headers=ADMIN)
    assert [e["requestId"] for e in one.json["failures"]] == [ids[1]]
    assert one.json["total"] == 2
    for bad in ("0", "abc", "201", "-1"):
        resp = site.client.simulate_get(f"{API}/consumer-failures/app", params={"limit": bad},
                                        headers=ADMIN)
        assert resp.status_code == 422 and "limit" in resp.json["errors"], bad
    missing = site.client.simulate_get(f"{API}/consumer-failures/never", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert site.client.simulate_get(f"{API}/consumer-failures/app").status_code == 401
    no_secret_in(site, resp.text)


# -- the debugger by request id -----------------------------------------------------------------


def test_the_debugger_runs_on_a_refusal_by_its_request_id(site: Site) -> None:
    ids = refuse_twice(site)
    resp = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN,
                                     json={"requestId": ids[0]})
    assert resp.status_code == 200, resp.text
    report = resp.json
    assert report["verdict"] == "invalid"
    assert [f["code"] for f in report["diagnosis"]] == ["consumer_secret_only"]
    assert report["history"]["requestId"] == ids[0]
    assert report["history"]["oauthProblem"] == "signature_invalid"
    assert report["history"]["consumerKey"] == "app"
    assert report["summary"].startswith(f"From the failure history: request {ids[0]} ")
    # The stale timestamp: the window counts from the time of the refusal.
    stale = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN,
                                      json={"requestId": ids[1], "consumerKey": "app"}).json
    assert "timestamp_outside_window" in [f["code"] for f in stale["diagnosis"]]
    no_secret_in(site, resp.text, json.dumps(stale))

    for body, status, field_name in (
            ({"requestId": "no-such-id"}, 404, None),
            ({"requestId": "bad id"}, 422, "requestId"),
            ({"requestId": 5}, 422, "requestId"),
            ({"requestId": ids[0], "url": "https://h/"}, 422, "url"),
            ({"requestId": ids[0], "consumerKey": ""}, 422, "consumerKey"),
            ({"requestId": ids[0], "consumerKey": "other"}, 404, None)):
        bad = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN, json=body)
        assert bad.status_code == status, (body, bad.text)
        assert bad.headers["Content-Type"] == "application/problem+json"
        if field_name:
            assert field_name in bad.json["errors"]

    root = Browser(site.client, "root", ADMIN_PW)
    page = root.get(DEBUG_PAGE, requestId=ids[0], consumer="app")
    assert page.status_code == 200 and 'data-verdict="invalid"' in page.text
    assert '<li data-code="consumer_secret_only">' in page.text
    assert 'id="history-source"' in page.text
    posted = root.post(DEBUG_PAGE, {"request_id": ids[0], "consumer": ""})
    assert posted.status_code == 200 and 'data-verdict="invalid"' in posted.text
    missing = root.post(DEBUG_PAGE, {"request_id": "nope", "consumer": ""})
    assert missing.status_code == 404 and 'id="e-request_id"' in missing.text
    assert root.post(DEBUG_PAGE, {"request_id": ids[0]}, csrf=False).status_code == 403
    no_secret_in(site, page.text, posted.text)


def test_a_refusal_with_a_verifier_cannot_be_checked_again(site: Site) -> None:
    consumer, _ = site.deps.ledger.load("consumer-app")
    token, verifier = approved_request_token(site.deps, consumer, "bob")
    site.secrets.append(verifier)
    _, headers, _ = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key=token.token,
                           resource_owner_secret="wrong", verifier=verifier).sign(
        ACCESS_TOKEN, "POST")
    rid = site.post(ACCESS_TOKEN, headers).headers["X-Request-Id"]
    report = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN,
                                       json={"requestId": rid}).json
    assert report["verdict"] == "cannot_tell"
    assert "does not keep the value of oauth_verifier" in report["summary"]
    assert report["request"]["endpoint"] == "access-token"
    assert report["signature"]["matches"] is None
    no_secret_in(site, json.dumps(report))


# -- the command line (PostgreSQL and the real Redis, shared with the CLI) ---------------------


@pytest.fixture
def cli_site(pg_url: str, redis_client: redis.Redis, key_layout: KeyLayout,
             tmp_path: Path) -> Iterator[tuple[Site, dict[str, str | None]]]:
    env: dict[str, str | None] = {
        "OAUTHLEDGER_DATA_DIR": str(tmp_path), "OAUTHLEDGER_DATABASE_URL": pg_url,
        "OAUTHLEDGER_REDIS_URL": REDIS_URL, "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix,
        "OAUTHLEDGER_SECRET_KEY_FILE": str(tmp_path / "keys.json"),
        "OAUTHLEDGER_BROKER_URL": None, "OAUTHLEDGER_BASE_URL": None}
    with pg_deps(pg_url, redis_client, key_layout, tmp_path) as seeded:
        del seeded  # migrates the schema; the site below uses the key file like the CLI
    deps = build_deps(load_settings({k: v for k, v in env.items() if v is not None}),
                      wake=lambda: None)
    deps.read_model.start_nonce_epoch(int(time.time()) - 3600)
    try:
        yield make_site(deps), env
    finally:
        deps.store.engine.dispose()


def run(env: dict[str, str | None], *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_the_cli_shows_the_history_and_debugs_a_refusal(cli_site) -> None:
    site, env = cli_site
    ids = refuse_twice(site)
    text = run(env, "consumer", "failures", "app")
    assert text.exit_code == 0, text.output
    assert text.output.startswith("consumer app: 2 refused request(s) kept")
    assert "last 24 hours: 0 accepted, 2 refused" in text.output
    assert text.output.index(ids[1]) < text.output.index(ids[0])  # newest first
    assert re.search(r"\n  timestamp_refused +1 / 1 ", text.output)
    as_json = json.loads(run(env, "consumer", "failures", "app", "--format", "json",
                             "--limit", "1").output)
    api = site.client.simulate_get(f"{API}/consumer-failures/app", params={"limit": "1"},
                                   headers=ADMIN).json
    assert as_json["failures"] == api["failures"] and as_json["byProblem"] == api["byProblem"]
    report = run(env, "debug", "signature", "--request-id", ids[0], "--format", "json")
    assert report.exit_code == 0, report.output
    assert [f["code"] for f in json.loads(report.output)["diagnosis"]] == [
        "consumer_secret_only"]
    plain = run(env, "debug", "signature", "--request-id", ids[0], "--consumer", "app")
    assert plain.output.startswith("verdict: invalid\nFrom the failure history")
    assert f"request {ids[0]} (/rest/api/2/myself): signature_invalid" in plain.output
    no_secret_in(site, text.output, report.output, plain.output)

    for args, needle in ((["consumer", "failures", "never"], "no consumer with key"),
                         (["debug", "signature", "--request-id", "nope"], "no refused request"),
                         (["debug", "signature", "--request-id", "a b"],
                          "is not a request id"),
                         (["debug", "signature", "--request-id", ids[0], "--url", RESOURCE],
                          "alone"),
                         (["debug", "signature", "--consumer", "app", "--url", RESOURCE],
                          "--request-id"),
                         (["debug", "signature"], "--url")):
        result = run(env, *args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("oauthledger: ") and needle in lines[0]
    down = run({**env, "OAUTHLEDGER_REDIS_URL": "redis://127.0.0.1:1/0"},
               "consumer", "failures", "app")
    assert down.exit_code == 1 and down.output.startswith("oauthledger: Redis cannot be reached")


def test_the_cli_on_the_embedded_default_says_where_to_look(tmp_path: Path) -> None:
    env = {"OAUTHLEDGER_DATA_DIR": str(tmp_path), "OAUTHLEDGER_DATABASE_URL": None,
           "OAUTHLEDGER_REDIS_URL": None, "OAUTHLEDGER_BROKER_URL": None,
           "OAUTHLEDGER_SECRET_KEY_FILE": None}
    for args in (["consumer", "failures", "app"], ["debug", "signature", "--request-id", "x"]):
        result = run(env, *args)
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "in-process store" in lines[0]


# -- the verify API ------------------------------------------------------------------------------


def test_the_verify_helper_records_a_refusal_for_a_resource_server(site: Site) -> None:
    """services.http.errors.record_verify_refusal, as the verify API calls it: the
    submitted request is recorded under step ``verify``."""
    from oauthledger.services.http.errors import record_verify_refusal
    from oauthledger.services.oauth.problems import OAuthProblem
    from oauthledger.services.oauth.request import parse_request

    url = "https://jira.example.com/rest/api/2/issue/X-1"
    without = Client("app", client_secret=CONSUMER_SECRET, resource_owner_key=site.grant.token)
    _, headers, _ = without.sign(url)
    lower = {k.lower(): v for k, v in headers.items()}
    sreq = parse_request("GET", url, lower, b"", None)

    class Submitted:
        def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
            refusal = record_verify_refusal(req, site.deps, OAuthProblem("signature_invalid",
                                                                         "advice"),
                                            "GET", url, lower, b"", sreq)
            resp.media = {"consumer": refusal.consumer_key}

    app = create_app(site.deps)
    app.add_route("/test/verify", Submitted())
    resp = falcon.testing.TestClient(app).simulate_post("/test/verify")
    assert resp.json == {"consumer": "app"}
    entry = site.report()["failures"][0]
    assert (entry["step"], entry["route"], entry["url"]) == (
        "verify", "/rest/oauthledger/1/verify", url)
    report = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN,
                                       json={"requestId": entry["requestId"]}).json
    assert [f["code"] for f in report["diagnosis"]] == ["consumer_secret_only"]


def test_the_verify_api_records_its_refusals(site: Site) -> None:
    secret = create_resource_server(site.deps.ledger, site.deps.sealer, "rs", "", META)
    url = "https://jira.example.com/rest/api/2/myself"
    _, headers, _ = Client("app", client_secret="wrong",
                           resource_owner_key=site.grant.token).sign(url)
    resp = site.client.simulate_post(f"{API}/verify", headers=basic("rs", secret),
                                     json={"method": "GET", "url": url, "headers": headers})
    assert resp.json["valid"] is False
    entry = site.report()["failures"][0]
    assert entry["step"] == "verify" and entry["oauthProblem"] == "signature_invalid"
