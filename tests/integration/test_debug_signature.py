"""The signature debugger through its three front doors on real stores: the admin JSON API
(POST /rest/oauthledger/1/debug/signature) and the page on the Consumers tab on
PostgreSQL + Redis, with an access token from the real dance, checked against what the
protected resource itself answers to the same signed request; and `oauthledger debug
signature` against an embedded data directory, in-process and as the installed script.
Who may use it, bad input (400/415/422, one CLI line), and no secret in any answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from oauthlib.oauth1 import Client

from oauthledger.services.cli import debug as cli_debug
from oauthledger.services.cli.main import cli
from oauthledger.services.deps import Deps
from tests.conftest import embedded_deps_in
from tests.integration.test_admin_api import (  # noqa: F401
    ADMIN,
    ADMIN_PW,
    ALICE,
    USER_PW,
    app,
    call,
    client,
    deps,
)
from tests.integration.test_admin_api_pages import Browser, csrf_of
from tests.support import CONSUMER_SECRET, grant, hmac_consumer

DEBUG = "/debug/signature"
PAGE = "/plugins/servlet/oauth/admin/consumers/debug-signature"
# falcon.testing sends requests to this host over http: what the app rebuilds.
RESOURCE = "http://falconframework.org/rest/api/2/myself"
OAUTHLEDGER = Path(sys.executable).with_name("oauthledger")

if "debug" not in cli.commands:
    cli.add_command(cli_debug.debug)


def oauth_client(d: Deps, **kw) -> tuple[Client, list[str]]:
    """bob's access token for consumer ``app`` from the dance; the client and every
    secret it holds."""
    consumer = hmac_consumer(d, "app", signature_methods=["HMAC-SHA1"])
    issued = grant(d, consumer, "bob")
    args = {"client_secret": CONSUMER_SECRET, "resource_owner_key": issued.token,
            "resource_owner_secret": issued.secret, **kw}
    return Client("app", **args), [CONSUMER_SECRET, issued.secret, issued.session_handle]


def as_json(url: str, headers: dict[str, str], method: str = "GET", body: str = "") -> dict:
    return {"method": method, "url": url, "headers": headers, "body": body}


def no_secret_in(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


# -- the API --------------------------------------------------------------------------


def test_api_verdict_agrees_with_the_protected_resource(client, deps) -> None:  # noqa: F811
    good, secrets = oauth_client(deps)
    _, headers, _ = good.sign(RESOURCE)
    report = call(client, "POST", DEBUG, body=as_json(RESOURCE, headers))
    assert report.status_code == 200, report.text
    assert report.json["verdict"] == "valid"
    assert report.json["signature"] == {"method": "HMAC-SHA1", "matches": True,
                                        "value": report.json["signature"]["value"]}
    assert report.json["request"]["baseStringUri"] == RESOURCE
    assert report.json["token"]["known"] and report.json["token"]["status"] == "active"
    no_secret_in(report.text, secrets)
    # The debugger uses up no nonce: the resource accepts the very same request after it.
    served = client.simulate_get("/rest/api/2/myself", headers=headers)
    assert served.status_code == 200 and served.json["name"] == "bob"

    # The same client without its token secret: the debugger names it, the resource refuses.
    without = Client(good.client_key, client_secret=good.client_secret,
                     resource_owner_key=good.resource_owner_key)
    _, headers, _ = without.sign(RESOURCE)
    report = call(client, "POST", DEBUG, body=as_json(RESOURCE, headers))
    assert report.json["verdict"] == "invalid"
    assert [f["code"] for f in report.json["diagnosis"]] == ["consumer_secret_only"]
    assert report.json["serverProblem"]["oauthProblem"] == "signature_invalid"
    no_secret_in(report.text, secrets)
    refused = client.simulate_get("/rest/api/2/myself", headers=headers)
    assert refused.status_code == 401
    assert 'oauth_problem="signature_invalid"' in refused.headers["WWW-Authenticate"]


def test_api_names_a_form_body_sent_as_json(client, deps) -> None:  # noqa: F811
    good, secrets = oauth_client(deps)
    _, headers, _ = good.sign(RESOURCE, "POST", body="a=1&b=2",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    headers["Content-Type"] = "application/json"
    report = call(client, "POST", DEBUG, body=as_json(RESOURCE, headers, "POST", "a=1&b=2"))
    assert report.status_code == 200
    assert [f["code"] for f in report.json["diagnosis"]] == ["body_not_form"]
    no_secret_in(report.text, secrets)


def test_api_is_for_admins_only(client, deps) -> None:  # noqa: F811
    body = as_json(RESOURCE, {})
    anonymous = call(client, "POST", DEBUG, who=None, body=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["Content-Type"] == "application/problem+json"
    user = call(client, "POST", DEBUG, who=ALICE, body=body)
    assert user.status_code == 403
    assert user.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("raw", "content_type", "status", "field"), [
    ("{not json", "application/json", 400, None),
    ("[1, 2]", "application/json", 400, None),
    ('{"url": "x"}', "text/plain", 415, None),
    ('{"method": "GET"}', "application/json", 422, "url"),
    ('{"method": "GET", "url": "/relative"}', "application/json", 422, "url"),
    ('{"method": "GET", "url": "https://h/", "headers": "Authorization: x"}',
     "application/json", 422, "headers"),
    ('{"method": "GET", "url": "https://h/", "body": "\\ud800"}', "application/json", 422,
     "body"),
    ('{"method": "GET", "url": "https://h:99999/"}', "application/json", 422, "url"),
    ('{"method": "GET", "url": "https://h/", "extra": 1}', "application/json", 422, "extra"),
    ('{"method": "GET", "url": "https://h/", "remoteAddr": "nowhere"}', "application/json",
     422, "remoteAddr"),
])
def test_api_bad_input_is_a_problem_never_a_500(client, raw, content_type, status,  # noqa: F811
                                                field) -> None:
    resp = client.simulate_post("/rest/oauthledger/1" + DEBUG, body=raw,
                                headers={**ADMIN, "Content-Type": content_type})
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    if field:
        assert field in resp.json["errors"]


def test_api_reports_a_malformed_request_instead_of_failing(client, deps) -> None:  # noqa: F811
    report = call(client, "POST", DEBUG, body=as_json(
        RESOURCE, {"Authorization": 'OAuth oauth_consumer_key="app", oauth_nonce="a b'}))
    assert report.status_code == 200
    assert report.json["verdict"] == "invalid"
    assert report.json["serverProblem"]["oauthProblem"] == "parameter_rejected"


# -- the page ---------------------------------------------------------------------------


def test_page_shows_the_report_for_admins_only(client, deps) -> None:  # noqa: F811
    good, secrets = oauth_client(deps)
    _, headers, _ = good.sign("http://jira.example.com:80/rest/api/2/myself")
    lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
    root = Browser(client, "root", ADMIN_PW)
    page = root.get(PAGE)
    assert page.status_code == 200 and 'id="debug-form"' in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    for field_id in re.findall(r'<(?:input|textarea|select) id="([^"]+)"', page.text):
        assert f'for="{field_id}"' in page.text, field_id  # every field has a label
    fields = {"method": "GET", "url": "https://jira.example.com/rest/api/2/myself",
              "headers": lines, "body": "", "remote_addr": ""}
    resp = root.post(PAGE, fields)
    assert resp.status_code == 200, resp.text[:500]
    assert 'data-verdict="invalid"' in resp.text
    assert '<li data-code="scheme">The client signed an http:// URL' in resp.text
    assert '<pre class="pem" id="base-string">GET&amp;https%3A%2F%2Fjira.example.com' in resp.text
    no_secret_in(resp.text, secrets)
    assert root.post(PAGE, fields, csrf=False).status_code == 403
    bad = root.post(PAGE, {**fields, "url": "not a url", "headers": "no colon here"})
    assert bad.status_code == 422 and 'id="e-headers"' in bad.text
    alice = Browser(client, "alice", USER_PW)
    assert alice.get(PAGE).status_code == 403
    assert alice.post(PAGE, fields).status_code == 403
    assert client.simulate_get(PAGE).status_code == 303  # anonymous: to the login page


def test_page_does_not_fill_in_a_verifier_again(client, deps) -> None:  # noqa: F811
    root = Browser(client, "root", ADMIN_PW)
    resp = root.post(PAGE, {"method": "POST",
                            "url": "https://h/plugins/servlet/oauth/access-token",
                            "headers": 'Authorization: OAuth oauth_consumer_key="nobody", '
                                       'oauth_verifier="verifier-value-123", '
                                       'oauth_signature_method="HMAC-SHA1", '
                                       'oauth_signature="x", oauth_timestamp="1", '
                                       'oauth_nonce="n"',
                            "body": "", "remote_addr": ""})
    assert resp.status_code == 200
    assert 'id="cleared"' in resp.text
    assert "verifier-value-123" not in resp.text
    assert csrf_of(resp.text)


# -- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[dict[str, str | None], Client, list[str]]:
    """An embedded data directory holding consumer ``app`` and bob's access token."""
    from oauthledger.services.users import register_user
    from tests.support import META

    with embedded_deps_in(tmp_path) as d:
        register_user(d.ledger, "bob", None, meta=META)
        good, secrets = oauth_client(d)
    env = {"OAUTHLEDGER_DATA_DIR": str(tmp_path), "OAUTHLEDGER_DATABASE_URL": None,
           "OAUTHLEDGER_SECRET_KEY_FILE": None, "OAUTHLEDGER_REDIS_URL": None,
           "OAUTHLEDGER_BROKER_URL": None, "OAUTHLEDGER_BASE_URL": None}
    return env, good, secrets


def run(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


URL = "https://jira.example.com/rest/api/2/myself"


def test_cli_prints_the_report(data_dir) -> None:
    env, good, secrets = data_dir
    _, headers, _ = good.sign(URL + "?expand=groups")
    args = ["debug", "signature", "--url", URL + "?expand=groups",
            "-H", f"Authorization: {headers['Authorization']}"]
    text = run(env, *args)
    assert text.exit_code == 0, text.output
    assert text.output.startswith("verdict: valid\n")
    assert "base string:\n  GET&https%3A%2F%2Fjira.example.com" in text.output
    assert re.search(r"\n  expand +query +groups\n", text.output)
    no_secret_in(text.output, secrets)
    as_json_out = run(env, *args, "--format", "json")
    report = json.loads(as_json_out.output)
    assert report["verdict"] == "valid" and report["diagnosis"] == []

    # Signed over http, called over https, with the body from a file: named.
    _, headers, _ = good.sign("http://jira.example.com/rest/api/2/myself", "POST")
    wrong = run(env, "debug", "signature", "-X", "POST", "--url", URL, "--format", "json",
                "-H", f"Authorization: {headers['Authorization']}", "-d", "")
    report = json.loads(wrong.output)
    assert [f["code"] for f in report["diagnosis"]] == ["scheme"]
    no_secret_in(wrong.output, secrets)


def test_cli_bad_input_is_one_line(data_dir) -> None:
    env, _, _ = data_dir
    for args, needle in ((["--url", "/relative"], "url:"),
                         (["--url", URL, "-H", "no colon"], "--header:"),
                         (["--url", URL, "-d", "x", "--data-file", "-"], "not both")):
        result = CliRunner().invoke(cli, ["debug", "signature", *args], env=env)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("oauthledger: ") and needle in lines[0]


def test_cli_as_the_installed_script(data_dir) -> None:
    env, good, secrets = data_dir
    _, headers, _ = good.sign(URL)
    full = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    full.update({k: v for k, v in env.items() if v is not None})
    done = subprocess.run(
        [str(OAUTHLEDGER), "debug", "signature", "--url", URL, "--header",
         f"Authorization: {headers['Authorization']}", "--format", "json"],
        env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "valid"
    no_secret_in(done.stdout + done.stderr, secrets)
