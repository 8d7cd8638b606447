"""The signature debugger (services.oauth.debugger) against requests signed by a real
client library (oauthlib's Client, and its RFC 5849 primitives where a client is made to
get the base string wrong on purpose), each with one mistake made deliberately: the
debugger must name exactly that mistake, say "valid" for a right request, and never put
a secret, or a signature computed with one, into its report.

Consumers and tokens come from the dance run through the application services on the
embedded dependencies (tests/unit/conftest.py), and are read back with
``store_loader`` as the API and the CLI read them."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_PLAINTEXT, SIGNATURE_RSA, Client
from oauthlib.oauth1.rfc5849 import signature as rfc

from oauthledger.events.settings import Settings
from oauthledger.events.state import ConsumerState, token_stream
from oauthledger.services import consumers, dance
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.oauth.debugger import (
    CANNOT_TELL,
    INVALID,
    MASK,
    VALID,
    Report,
    debug_request,
    debug_signature,
    header_lines,
    store_loader,
)
from oauthledger.services.users import register_user
from tests.support import CONSUMER_SECRET, META, hmac_consumer

KEY = "app"
FORM = "application/x-www-form-urlencoded"
URL = "https://jira.example.com/rest/api/2/myself"


@dataclasses.dataclass
class Grant:
    """A consumer and an access token from the dance, with every secret a client holds
    (kept here to sign with and to scan the reports for)."""

    consumer: ConsumerState
    token: str
    token_secret: str
    request_token: str
    request_secret: str
    verifier: str
    session_handle: str

    def client(self, **kw: Any) -> Client:
        """An oauthlib client holding the access token; ``kw`` overrides any field."""
        args: dict[str, Any] = {"client_secret": CONSUMER_SECRET,
                                "resource_owner_key": self.token,
                                "resource_owner_secret": self.token_secret}
        args.update(kw)
        return Client(KEY, **args)

    def secrets(self) -> list[str]:
        """Every secret of this grant: none may appear in a report."""
        return [CONSUMER_SECRET, self.token_secret, self.request_secret, self.verifier,
                self.session_handle]


def run_dance(deps: Deps, consumer: ConsumerState) -> Grant:
    """The three legs through the services, keeping the request token's secret."""
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "oob", META)
    rt, _ = deps.ledger.load(token_stream(issued.token))
    verifier = dance.decide(deps.ledger, deps.sealer, rt, "bob", True, META)
    assert verifier is not None
    rt, _ = deps.ledger.load(token_stream(issued.token))
    access = dance.exchange(deps.ledger, deps.sealer, deps.settings, rt, verifier, META)
    return Grant(consumer, access.token, access.secret, issued.token, issued.secret, verifier,
                 access.session_handle)


@pytest.fixture
def granted(deps: Deps) -> Grant:
    """An HMAC-SHA1 consumer (the secret of tests/support.py) and bob's access token."""
    register_user(deps.ledger, "bob", None, meta=META)
    return run_dance(deps, hmac_consumer(deps, KEY, signature_methods=["HMAC-SHA1"]))


def debug(deps: Deps, method: str, url: str, headers: dict[str, str] | list[tuple[str, str]],
          body: str | None = None, settings: Settings | None = None,
          remote_addr: str | None = None) -> Report:
    """Run the debugger as the API does: input checked, credentials from the store."""
    dreq = debug_request(method, url, headers, body, remote_addr)
    return debug_signature(dreq, store_loader(deps.store, deps.sealer),
                           settings or deps.settings)


def sign(client: Client, url: str, method: str = "GET", body: str | None = None,
         content_type: str | None = None) -> dict[str, str]:
    """The headers oauthlib's client signs ``url`` with (the Authorization header, and
    the Content-Type it was given)."""
    headers = {"Content-Type": content_type} if content_type else None
    _, signed, _ = client.sign(url, method, body=body, headers=headers)
    return dict(signed)


def codes(report: Report) -> list[str]:
    return [f.code for f in report.diagnosis]


def assert_names(report: Report, code: str, verdict: str = INVALID) -> None:
    """The report names exactly ``code`` (one mistake made, one named)."""
    assert report.verdict == verdict, report.to_text()
    assert codes(report) == [code], report.to_text()
    if verdict == INVALID and report.signature_matches is False:
        assert report.summary.startswith("The signature does not match.")
        assert report.diagnosis[0].message in report.summary


def sign_base_string(client: Client, base_uri: str, method: str, headers: dict[str, str],
                     hmac_method: str = "HMAC-SHA1") -> dict[str, str]:
    """Re-sign a request the way a client that builds its own base string would: the
    parameters of ``headers`` (oauthlib signed them), the base string over ``base_uri``
    taken literally (no normalization), signed with ``hmac_method`` (RFC 5849 primitives
    of oauthlib)."""
    params = rfc.collect_parameters(headers=headers, exclude_oauth_signature=True)
    normalized = rfc.normalize_parameters(params)
    base = rfc.signature_base_string(method, base_uri, normalized)
    signer = {"HMAC-SHA1": rfc.sign_hmac_sha1_with_client,
              "HMAC-SHA256": rfc.sign_hmac_sha256_with_client,
              "HMAC-SHA512": rfc.sign_hmac_sha512_with_client}[hmac_method]
    sig = signer(base, client)
    auth = headers["Authorization"]
    old = next(p for p in auth.split(", ") if p.startswith("oauth_signature="))
    new = f'oauth_signature="{quote(sig, safe="")}"'
    return {**headers, "Authorization": auth.replace(old, new)}


# -- valid ---------------------------------------------------------------------------------


def test_a_correctly_signed_request_is_valid(deps: Deps, granted: Grant) -> None:
    url = URL + "?expand=groups"
    report = debug(deps, "GET", url, sign(granted.client(), url))
    assert report.verdict == VALID, report.to_text()
    assert report.signature_matches is True and report.diagnosis == []
    assert report.server_problem is None
    assert report.server_url == URL + "?expand=groups"
    assert report.base_string_uri == URL
    assert report.base_string.startswith("GET&https%3A%2F%2Fjira.example.com%2Frest")
    assert "expand%3Dgroups" in report.base_string
    sources = {(p.name, p.source, p.signed) for p in report.parameters}
    assert ("expand", "query", True) in sources
    assert ("oauth_token", "header", True) in sources
    assert ("oauth_signature", "header", False) in sources


def test_a_correct_form_post_is_valid_and_its_body_parameters_are_signed(
        deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), URL, "POST", "a=1&b=x+y", FORM)
    report = debug(deps, "POST", URL, headers, "a=1&b=x+y")
    assert report.verdict == VALID, report.to_text()
    assert ("b", "x y", "body") in {(p.name, p.value, p.source) for p in report.parameters}


# -- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(("client_kw", "code"), [
    ({"resource_owner_secret": None}, "consumer_secret_only"),
    ({"client_secret": ""}, "empty_consumer_secret"),
    ({"client_secret": "", "resource_owner_secret": None}, "empty_secrets"),
])
def test_signed_with_the_wrong_secret_combination(deps: Deps, granted: Grant,
                                                  client_kw: dict[str, Any], code: str) -> None:
    report = debug(deps, "GET", URL, sign(granted.client(**client_kw), URL))
    assert_names(report, code)


def test_secrets_swapped(deps: Deps, granted: Grant) -> None:
    client = granted.client(client_secret=granted.token_secret,
                            resource_owner_secret=CONSUMER_SECRET)
    assert_names(debug(deps, "GET", URL, sign(client, URL)), "secrets_swapped")


def test_token_secret_in_the_consumer_secrets_place(deps: Deps, granted: Grant) -> None:
    client = granted.client(client_secret=granted.token_secret, resource_owner_secret=None)
    assert_names(debug(deps, "GET", URL, sign(client, URL)), "token_secret_as_consumer_secret")


def test_signed_with_the_request_tokens_secret_after_the_exchange(
        deps: Deps, granted: Grant) -> None:
    client = granted.client(resource_owner_secret=granted.request_secret)
    report = debug(deps, "GET", URL, sign(client, URL))
    assert_names(report, "request_token_secret")
    assert "request token's secret" in report.summary


def test_signed_with_another_consumer_secret_matches_nothing(deps: Deps, granted: Grant) -> None:
    report = debug(deps, "GET", URL, sign(granted.client(client_secret="not-the-secret"), URL))
    assert_names(report, "no_match")
    assert "another consumer secret" in report.diagnosis[0].message


# -- the URL ------------------------------------------------------------------------------


def test_signed_http_with_the_default_port_but_sent_to_https(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), "http://jira.example.com:80/rest/api/2/myself")
    report = debug(deps, "GET", URL, headers)
    assert_names(report, "scheme")
    assert "http://" in report.diagnosis[0].message and "https://" in report.diagnosis[0].message


def test_two_mistakes_at_once_are_both_named(deps: Deps, granted: Grant) -> None:
    client = granted.client(resource_owner_secret=None)
    report = debug(deps, "GET", URL, sign(client, "http://jira.example.com/rest/api/2/myself"))
    assert report.verdict == INVALID
    assert codes(report) == ["scheme", "consumer_secret_only"]
    for finding in report.diagnosis:
        assert finding.message in report.summary


def test_default_port_written_into_the_base_string(deps: Deps, granted: Grant) -> None:
    client = granted.client()
    headers = sign_base_string(client, "https://jira.example.com:443/rest/api/2/myself", "GET",
                               sign(client, URL))
    report = debug(deps, "GET", URL, headers)
    assert_names(report, "default_port_written_out")
    assert ":443" in report.diagnosis[0].message


def test_port_left_off(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), URL)
    report = debug(deps, "GET", "https://jira.example.com:8443/rest/api/2/myself", headers)
    assert_names(report, "port_left_off")
    assert ":8443" in report.diagnosis[0].message


def test_host_header_of_a_proxy(deps: Deps, granted: Grant) -> None:
    headers = {**sign(granted.client(), URL), "Host": "jira-backend:8080"}
    report = debug(deps, "GET", URL, headers)
    assert report.server_url == "https://jira-backend:8080/rest/api/2/myself"
    assert_names(report, "host_header")


def test_forwarding_headers_from_an_untrusted_address(deps: Deps, granted: Grant) -> None:
    headers = {**sign(granted.client(), "https://jira.example.com/jira/rest/api/2/myself"),
               "X-Forwarded-Proto": "https", "X-Forwarded-Host": "jira.example.com",
               "X-Forwarded-Prefix": "/jira"}
    report = debug(deps, "GET", "http://127.0.0.1:8080/rest/api/2/myself", headers,
                   remote_addr="10.1.2.3")
    assert_names(report, "forwarding_headers_ignored")
    assert "10.1.2.3 is not in OAUTHLEDGER_TRUSTED_PROXIES" in report.diagnosis[0].message
    # The same request from a trusted proxy is what the server accepts.
    import ipaddress
    trusting = dataclasses.replace(deps.settings,
                                   trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    ok = debug(deps, "GET", "http://127.0.0.1:8080/rest/api/2/myself", headers,
               settings=trusting, remote_addr="10.1.2.3")
    assert ok.verdict == VALID, ok.to_text()


def test_rfc7239_forwarded_header_without_a_sender_address(deps: Deps, granted: Grant) -> None:
    headers = {**sign(granted.client(), URL),
               "Forwarded": 'for=192.0.2.1;proto=https;host="jira.example.com"'}
    report = debug(deps, "GET", "http://127.0.0.1:8080/rest/api/2/myself", headers)
    assert_names(report, "forwarding_headers_ignored")
    assert "no sender address was given" in report.diagnosis[0].message


def test_base_url_rebuilds_another_url(deps: Deps, granted: Grant) -> None:
    internal = "http://127.0.0.1:8080/rest/api/2/myself"
    settings = dataclasses.replace(deps.settings, base_url="https://jira.example.com/jira")
    report = debug(deps, "GET", internal, sign(granted.client(), internal), settings=settings)
    assert report.server_url == "https://jira.example.com/jira/rest/api/2/myself"
    assert_names(report, "base_url")


def test_signed_the_path_decoded(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), "https://jira.example.com/wiki/spaces/R&D")
    report = debug(deps, "GET", "https://jira.example.com/wiki/spaces/R%26D", headers)
    assert_names(report, "path_decoded")


def test_signed_the_path_encoded(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), "https://jira.example.com/browse/a%3Ab")
    report = debug(deps, "GET", "https://jira.example.com/browse/a:b", headers)
    assert_names(report, "path_encoded")


@pytest.mark.parametrize(("signed_path", "sent_path"), [("/rest/x/", "/rest/x"),
                                                        ("/rest/x", "/rest/x/")])
def test_trailing_slash(deps: Deps, granted: Grant, signed_path: str, sent_path: str) -> None:
    headers = sign(granted.client(), "https://jira.example.com" + signed_path)
    report = debug(deps, "GET", "https://jira.example.com" + sent_path, headers)
    assert_names(report, "trailing_slash")


# -- parameters ----------------------------------------------------------------------------


def test_query_parameter_left_out_of_the_base_string(deps: Deps, granted: Grant) -> None:
    report = debug(deps, "GET", URL + "?jql=project%3DABC&maxResults=5",
                   sign(granted.client(), URL + "?maxResults=5"))
    assert_names(report, "query_parameter_not_signed")
    assert report.diagnosis[0].details == {"parameter": "jql"}


def test_body_parameters_signed_as_a_form_but_sent_as_json(deps: Deps, granted: Grant) -> None:
    headers = {**sign(granted.client(), URL, "POST", "a=1&b=2", FORM),
               "Content-Type": "application/json"}
    report = debug(deps, "POST", URL, headers, "a=1&b=2")
    assert_names(report, "body_not_form")
    assert "application/json" in report.diagnosis[0].message


def test_form_body_the_client_did_not_sign(deps: Deps, granted: Grant) -> None:
    headers = {**sign(granted.client(), URL, "POST"), "Content-Type": FORM}
    report = debug(deps, "POST", URL, headers, "a=1&b=2")
    assert_names(report, "body_form_not_signed")


def test_double_encoded_parameter(deps: Deps, granted: Grant) -> None:
    # The client encoded "a b" itself and gave the library "a%20b", which encoded again.
    headers = sign(granted.client(), URL + "?q=a%2520b")
    report = debug(deps, "GET", URL + "?q=a%20b", headers)
    assert_names(report, "double_encoded")
    assert report.diagnosis[0].details == {"parameter": "q"}


def test_parameter_sent_double_encoded_but_signed_once(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), URL + "?q=a%20b")
    report = debug(deps, "GET", URL + "?q=a%2520b", headers)
    assert_names(report, "decoded_value")


def test_plus_signed_for_a_space(deps: Deps, granted: Grant) -> None:
    headers = sign(granted.client(), URL + "?q=a%2Bb")
    report = debug(deps, "GET", URL + "?q=a+b", headers)
    assert_names(report, "plus_for_space")


def test_body_hash_mismatch(deps: Deps, granted: Grant) -> None:
    # oauthlib adds oauth_body_hash to a non-form body; the body is changed afterwards.
    headers = sign(granted.client(), URL, "POST", '{"summary": "one"}', "application/json")
    assert "oauth_body_hash" in headers["Authorization"]
    report = debug(deps, "POST", URL, headers, '{"summary": "two"}')
    # The signature itself still verifies: oauthledger does not check the body hash.
    assert_names(report, "body_hash_mismatch", verdict=VALID)
    same = debug(deps, "POST", URL, headers, '{"summary": "one"}')
    assert same.verdict == VALID and same.diagnosis == []


def test_the_search_stops_within_its_budget(deps: Deps, granted: Grant,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A 64 KiB form holds thousands of parameters, and every try normalizes them all:
    # the search is bounded, and says so when it stopped before finding an explanation.
    from oauthledger.services.oauth import debugger

    headers = sign(granted.client(client_secret="not-the-secret"), URL + "?a=1&b=2")
    monkeypatch.setattr(debugger, "_BUDGET", 60)
    stopped = debug(deps, "GET", URL + "?a=1&b=2", headers)
    assert_names(stopped, "search_incomplete")
    monkeypatch.undo()
    assert_names(debug(deps, "GET", URL + "?a=1&b=2", headers), "no_match")


# -- timestamp, method, consumer, token ----------------------------------------------------


def test_timestamp_outside_the_window(deps: Deps, granted: Grant) -> None:
    stamp = str(int(time.time()) - 3600)
    report = debug(deps, "GET", URL, sign(granted.client(timestamp=stamp), URL))
    assert report.verdict == INVALID and report.signature_matches is True, report.to_text()
    assert codes(report) == ["timestamp_outside_window"]
    skew = report.diagnosis[0].details["skewSeconds"]
    assert -3660 < skew < -3540
    assert report.server_problem["oauthProblem"] == "timestamp_refused"
    assert report.summary.startswith("The signature matches, but the server refuses")


def test_hmac_against_a_consumer_registered_for_rsa_only(deps: Deps) -> None:
    register_user(deps.ledger, "bob", None, meta=META)
    state, _ = consumers.register_consumer(
        deps.ledger, deps.sealer, "rsa-app",
        consumers.ConsumerInput(name="RSA app", public_key=public_pem(private_key()),
                                signature_methods=["RSA-SHA1"]), META)
    grant = run_dance(deps, state)
    client = Client("rsa-app", client_secret="", resource_owner_key=grant.token,
                    resource_owner_secret=grant.token_secret)
    report = debug(deps, "GET", URL, sign(client, URL))
    assert report.verdict == CANNOT_TELL, report.to_text()
    # The client signed with an empty consumer secret and the token secret: named too.
    assert codes(report) == ["signature_method_not_registered", "no_shared_secret",
                             "empty_consumer_secret"]
    assert report.diagnosis[0].details == {"used": "HMAC-SHA1", "registered": ["RSA-SHA1"]}
    assert report.server_problem["oauthProblem"] == "signature_method_rejected"


def test_method_not_registered_while_the_signature_is_right(deps: Deps) -> None:
    state = hmac_consumer(deps, "both", public_key=public_pem(private_key()),
                          signature_methods=["RSA-SHA1"])
    client = Client("both", client_secret=CONSUMER_SECRET)
    report = debug(deps, "GET", URL, sign(client, URL))
    assert state.signature_methods == ("RSA-SHA1",)
    assert report.verdict == INVALID and report.signature_matches is True, report.to_text()
    assert codes(report) == ["signature_method_not_registered"]


def test_signature_computed_with_another_method_than_named(deps: Deps, granted: Grant) -> None:
    client = granted.client()
    headers = sign_base_string(client, URL, "GET", sign(client, URL), hmac_method="HMAC-SHA256")
    report = debug(deps, "GET", URL, headers)
    assert_names(report, "signature_method_mislabeled")
    assert report.diagnosis[0].details == {"named": "HMAC-SHA1", "used": "HMAC-SHA256"}


def test_rsa_candidates_are_verified_against_the_public_key(deps: Deps) -> None:
    key = private_key()
    register_user(deps.ledger, "bob", None, meta=META)
    state, _ = consumers.register_consumer(
        deps.ledger, deps.sealer, "jira:1", consumers.ConsumerInput(
            name="Jira", public_key=public_pem(key), signature_methods=["RSA-SHA1"]), META)
    grant = run_dance(deps, state)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    client = Client("jira:1", signature_method=SIGNATURE_RSA, rsa_key=pem,
                    resource_owner_key=grant.token)
    assert debug(deps, "GET", URL, sign(client, URL)).verdict == VALID
    report = debug(deps, "GET", URL, sign(client, "http://jira.example.com/rest/api/2/myself"))
    assert_names(report, "scheme")
    other = Client("jira:1", signature_method=SIGNATURE_RSA, resource_owner_key=grant.token,
                   rsa_key=private_key().private_bytes(
                       serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                       serialization.NoEncryption()).decode())
    wrong_key = debug(deps, "GET", URL, sign(other, URL))
    assert_names(wrong_key, "no_match")
    assert "private key" in wrong_key.diagnosis[0].message


def test_unknown_consumer_cannot_be_told(deps: Deps) -> None:
    report = debug(deps, "GET", URL, sign(Client("nobody", client_secret="x"), URL))
    assert report.verdict == CANNOT_TELL
    assert codes(report) == ["consumer_unknown"]
    assert report.server_problem["oauthProblem"] == "consumer_key_unknown"
    assert report.base_string is not None  # what the server computes is still shown


def test_unknown_token_cannot_be_told_but_a_consumer_only_signature_is_named(
        deps: Deps, granted: Grant) -> None:
    client = granted.client(resource_owner_key="no-such-token", resource_owner_secret=None)
    report = debug(deps, "GET", URL, sign(client, URL))
    assert report.verdict == CANNOT_TELL, report.to_text()
    assert codes(report) == ["token_unknown", "consumer_secret_only"]


def test_revoked_token_is_invalid_whatever_the_signature(deps: Deps, granted: Grant) -> None:
    dance.revoke(deps.ledger, granted.token, "admin", META)
    report = debug(deps, "GET", URL, sign(granted.client(), URL))
    assert report.verdict == INVALID and report.signature_matches is True
    assert codes(report) == ["token_revoked"]
    assert report.token == {**report.token, "known": True, "status": "revoked"}


def test_access_token_step_with_the_verifier_hides_it(deps: Deps) -> None:
    register_user(deps.ledger, "bob", None, meta=META)
    consumer = hmac_consumer(deps, KEY)
    issued = dance.issue_request_token(deps.ledger, deps.sealer, deps.settings, consumer,
                                       "oob", META)
    rt, _ = deps.ledger.load(token_stream(issued.token))
    verifier = dance.decide(deps.ledger, deps.sealer, rt, "bob", True, META)
    client = Client(KEY, client_secret=CONSUMER_SECRET, resource_owner_key=issued.token,
                    resource_owner_secret=issued.secret, verifier=verifier)
    endpoint = "https://jira.example.com/plugins/servlet/oauth/access-token"
    report = debug(deps, "POST", endpoint, sign(client, endpoint, "POST"))
    assert report.verdict == VALID, report.to_text()
    assert report.endpoint == "access-token"
    assert report.hidden == ["oauth_verifier"]
    assert verifier not in json.dumps(report.to_dict()) and verifier not in report.to_text()
    # The base string encodes the mask like any value (RFC 5849 §3.4.1.3.2, then §3.6).
    assert f"oauth_verifier%3D{quote(quote(MASK, safe=''), safe='')}" in report.base_string
    # Without the token secret at this step: named like at a resource.
    bad = Client(KEY, client_secret=CONSUMER_SECRET, resource_owner_key=issued.token,
                 verifier=verifier)
    assert_names(debug(deps, "POST", endpoint, sign(bad, endpoint, "POST")),
                 "consumer_secret_only")


def test_plaintext_signature_is_never_shown(deps: Deps, granted: Grant) -> None:
    consumers.update_consumer(deps.ledger, deps.sealer, KEY, consumers.ConsumerInput(
        signature_methods=["HMAC-SHA1", "PLAINTEXT"]), META)
    client = granted.client(signature_method=SIGNATURE_PLAINTEXT)
    ok = debug(deps, "GET", URL, sign(client, URL))
    assert ok.verdict == VALID, ok.to_text()
    assert ok.signature == MASK
    no_token_secret = debug(deps, "GET", URL, sign(granted.client(
        signature_method=SIGNATURE_PLAINTEXT, resource_owner_secret=None), URL))
    assert_names(no_token_secret, "consumer_secret_only")
    for report in (ok, no_token_secret):
        text = json.dumps(report.to_dict()) + report.to_text()
        for secret in (CONSUMER_SECRET, granted.token_secret, quote(CONSUMER_SECRET)):
            assert secret not in text


# -- no secret, no computed signature ---------------------------------------------------


def hmacs(secrets: list[str], base_strings: list[str]) -> set[str]:
    """Every base64 HMAC (SHA-1/256/512) of ``base_strings`` under every key built from
    ``secrets`` (and the empty string) the way RFC 5849 §3.4.2 builds keys."""
    out = set()
    pool = ["", *secrets]
    for c in pool:
        for t in pool:
            key = f"{quote(c, safe='~')}&{quote(t, safe='~')}".encode()
            for base in base_strings:
                for digest in (hashlib.sha1, hashlib.sha256, hashlib.sha512):
                    out.add(base64.b64encode(hmac.new(key, base.encode(), digest).digest())
                            .decode())
    return out


def test_reports_hold_no_secret_and_no_signature_computed_with_one(
        deps: Deps, granted: Grant) -> None:
    client = granted.client()
    cases = [
        ("GET", URL, sign(client, URL), None),
        ("GET", URL, sign(granted.client(resource_owner_secret=None), URL), None),
        ("GET", URL, sign(granted.client(client_secret="wrong"), URL), None),
        ("GET", URL, sign(client, "http://jira.example.com/rest/api/2/myself"), None),
        ("POST", URL, {**sign(client, URL, "POST", "a=1", FORM), "Content-Type": "text/plain"},
         "a=1"),
        ("GET", URL + "?q=a%20b", sign(client, URL + "?q=a%2520b"), None),
    ]
    for method, url, headers, body in cases:
        report = debug(deps, method, url, headers, body)
        text = json.dumps(report.to_dict()) + report.to_text()
        for secret in granted.secrets():
            assert secret not in text, (secret, report.to_text())
        # The base strings the server computed and the ones the client may have signed.
        bases = [report.base_string or ""]
        for signed_url in (url, "http://jira.example.com/rest/api/2/myself",
                           URL + "?q=a%2520b", URL):
            bases.append(rfc.signature_base_string(
                method, rfc.base_string_uri(signed_url.split("?")[0]),
                rfc.normalize_parameters(rfc.collect_parameters(
                    uri_query=signed_url.partition("?")[2], headers=headers,
                    body=body if body and headers.get("Content-Type") == FORM else None,
                    exclude_oauth_signature=True))))
        computed = hmacs(granted.secrets(), bases)
        client_signature = report.signature
        for value in computed:
            # The client's own signature may be shown; nothing else computed with a secret.
            assert value not in text or value == client_signature, (value, report.to_text())


# -- input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "field"), [
    (("GET", None, {}, None), "url"),
    (("GET", "/rest/api/2/myself", {}, None), "url"),
    (("GET", "ftp://host/x", {}, None), "url"),
    (("GET", "https://host:99999/x", {}, None), "url"),
    (("GET", "https://host/x\ny", {}, None), "url"),
    (("GET", "https://host/\ud800", {}, None), "url"),
    (("G ET", "https://host/x", {}, None), "method"),
    ((None, "https://host/x", {}, None), "method"),
    (("GET", "https://host/x", {"Bad Name": "x"}, None), "headers"),
    (("GET", "https://host/x", {"X": "a\r\nb"}, None), "headers"),
    (("GET", "https://host/x", {"X": 1}, None), "headers"),
    (("GET", "https://host/x", "Authorization: x", None), "headers"),
    (("GET", "https://host/x", {}, {"a": 1}), "body"),
    (("GET", "https://host/x", {}, "x" * (64 * 1024 + 1)), "body"),
])
def test_bad_input_names_the_field(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        debug_request(*args)
    assert field in caught.value.fields


def test_header_lines() -> None:
    assert header_lines("Authorization: OAuth a=\"b\"\n\nContent-Type: text/plain\n") == [
        ("Authorization", 'OAuth a="b"'), ("Content-Type", "text/plain")]
    with pytest.raises(ValidationError) as caught:
        header_lines("Authorization OAuth")
    assert caught.value.fields == {"headers": "line 1 is not 'Name: value'"}
    with pytest.raises(ValidationError):
        debug_request("GET", URL, {}, None, remote_addr="not an address")


def test_malformed_requests_are_reported_not_raised(deps: Deps, granted: Grant) -> None:
    broken = debug(deps, "GET", URL, {"Authorization": 'OAuth oauth_consumer_key="app", "x'})
    assert broken.verdict == INVALID
    assert broken.server_problem["oauthProblem"] == "parameter_rejected"
    missing = debug(deps, "GET", URL + "?oauth_verifier=secret-ish", {})
    assert missing.server_problem["oauthProblem"] == "parameter_absent"
    assert "secret-ish" not in json.dumps(missing.to_dict())
    unsigned = debug(deps, "GET", URL, {})
    assert codes(unsigned) == ["parameter_absent"]


def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
