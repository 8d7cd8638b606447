"""parse_request: what real clients send (docs/oauth.md, "Where parameters may come
from") and what must be refused with one clear problem."""

from __future__ import annotations

import pytest

from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import parse_authorization, parse_request

URL = "https://jira.example.com/plugins/servlet/oauth/request-token"
FORM = "application/x-www-form-urlencoded"
BASE = {
    "oauth_consumer_key": "ck",
    "oauth_signature_method": "HMAC-SHA1",
    "oauth_timestamp": "1700000000",
    "oauth_nonce": "abc",
    "oauth_signature": "c2ln",
}


def header(params: dict[str, str], sep: str = ", ", realm: str | None = "r") -> dict[str, str]:
    parts = [f'realm="{realm}"'] if realm is not None else []
    parts += [f'{k}="{v}"' for k, v in params.items()]
    return {"Authorization": "OAuth " + sep.join(parts)}


def form(params: dict[str, str]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in params.items()).encode()


def problem(fn, *args) -> OAuthProblem:
    with pytest.raises(OAuthProblem) as info:
        fn(*args)
    return info.value


@pytest.mark.parametrize("sep", [", ", ",", " , ", ",\t"])
def test_header_with_or_without_spaces(sep: str) -> None:
    req = parse_request("POST", URL, header(BASE, sep), b"", None)
    assert req.consumer_key == "ck"
    assert req.nonce == "abc"
    assert req.signature == "c2ln"
    assert ("oauth_signature", "c2ln") not in req.params
    assert all(k != "realm" for k, _ in req.params)


def test_header_scheme_case_and_realm_with_comma() -> None:
    h = {"authorization": 'oauth realm="Example, Inc.", ' + header(BASE, realm=None)[
        "Authorization"][6:]}
    req = parse_request("GET", URL, h, b"", None)
    assert req.consumer_key == "ck"


def test_header_values_are_percent_decoded() -> None:
    params = dict(BASE, oauth_callback="http%3A%2F%2Fprinter.example.com%2Fready",
                  oauth_signature="74KNZJeDHnMBp0EMJ9ZHt%2FXKycU%3D")
    req = parse_request("POST", URL, header(params), b"", None)
    assert req.callback == "http://printer.example.com/ready"
    assert req.signature == "74KNZJeDHnMBp0EMJ9ZHt/XKycU="


def test_non_oauth_authorization_header_is_ignored() -> None:
    p = problem(parse_request, "GET", URL, {"Authorization": "Basic dXNlcjpwYXNz"}, b"", None)
    assert p.problem == "parameter_absent"
    assert assert_absent(p) == ["oauth_consumer_key", "oauth_signature_method",
                                "oauth_signature", "oauth_timestamp", "oauth_nonce"]


def assert_absent(p: OAuthProblem) -> list[str]:
    return p.params["oauth_parameters_absent"].split("&")


def test_all_parameters_in_query_with_empty_post_body() -> None:
    query = "&".join(f"{k}={v}" for k, v in BASE.items())
    req = parse_request("POST", f"{URL}?{query}", {}, b"", None)
    assert req.consumer_key == "ck"
    assert req.base_uri == URL


@pytest.mark.parametrize(
    "content_type",
    [FORM, f"{FORM}; charset=UTF-8", "Application/X-WWW-Form-Urlencoded;charset=utf-8", None],
)
def test_parameters_in_form_body(content_type: str | None) -> None:
    body = form(dict(BASE, extra="a+b%21"))
    req = parse_request("POST", URL, {}, body, content_type)
    assert req.consumer_key == "ck"
    assert ("extra", "a b!") in req.params
    assert req.other_params == {"extra": "a b!"}


def test_body_without_content_type_that_is_not_a_form_is_ignored() -> None:
    for body in (b'{"oauth_consumer_key": "ck"}', b"just some text", b"\xff\xfe=1"):
        req = parse_request("POST", URL, header(BASE), body, None)
        assert req.params == tuple((k, v) for k, v in BASE.items() if k != "oauth_signature")


def test_json_body_with_content_type_is_not_parsed() -> None:
    req = parse_request("POST", URL, header(BASE), b"a=1", "application/json")
    assert req.other_params == {}


def test_same_parameter_same_value_in_two_places_counts_once() -> None:
    params = dict(BASE, oauth_callback="oob")
    req = parse_request("POST", URL + "?oauth_callback=oob", header(params),
                        form({"oauth_callback": "oob"}), FORM)
    assert [k for k, _ in req.params].count("oauth_callback") == 1
    assert req.repeated == (("oauth_callback", "oob"), ("oauth_callback", "oob"))
    assert req.callback == "oob"


def test_same_parameter_different_values_rejected() -> None:
    p = problem(parse_request, "POST", URL, header(BASE),
                form({"oauth_nonce": "other"}), FORM)
    assert p.problem == "parameter_rejected"
    assert p.status == 400
    assert p.params == {"oauth_parameters_rejected": "oauth_nonce"}
    assert "Authorization header" in p.advice and "form body" in p.advice


def test_duplicate_within_one_place_rejected() -> None:
    query = "&".join(f"{k}={v}" for k, v in BASE.items()) + "&oauth_nonce=abc"
    p = problem(parse_request, "GET", f"{URL}?{query}", {}, b"", None)
    assert p.problem == "parameter_rejected"
    assert p.params["oauth_parameters_rejected"] == "oauth_nonce"


def test_non_oauth_parameters_may_repeat() -> None:
    req = parse_request("GET", URL + "?a=1&a=2", header(BASE), b"", None)
    assert ("a", "1") in req.params and ("a", "2") in req.params


@pytest.mark.parametrize("missing", ["oauth_consumer_key", "oauth_signature_method",
                                     "oauth_signature", "oauth_timestamp", "oauth_nonce"])
def test_missing_required(missing: str) -> None:
    params = {k: v for k, v in BASE.items() if k != missing}
    p = problem(parse_request, "GET", URL, header(params), b"", None)
    assert p.problem == "parameter_absent"
    assert p.status == 400
    assert assert_absent(p) == [missing]


def test_several_missing_listed_together() -> None:
    params = {"oauth_consumer_key": "ck", "oauth_signature_method": "HMAC-SHA1"}
    p = problem(parse_request, "GET", URL, header(params), b"", None)
    assert p.params["oauth_parameters_absent"] == "oauth_signature&oauth_timestamp&oauth_nonce"


def test_plaintext_without_timestamp_and_nonce() -> None:
    params = {"oauth_consumer_key": "ck", "oauth_signature_method": "PLAINTEXT",
              "oauth_signature": "secret%26"}
    req = parse_request("POST", URL, header(params), b"", None)
    assert req.timestamp is None and req.nonce is None
    assert req.signature == "secret&"


@pytest.mark.parametrize("version", [None, "1.0", "1.0a", "1.0A"])
def test_versions_accepted(version: str | None) -> None:
    params = dict(BASE) if version is None else dict(BASE, oauth_version=version)
    assert parse_request("GET", URL, header(params), b"", None).version == version


@pytest.mark.parametrize("version", ["2.0", "1.1", "", "1"])
def test_versions_rejected(version: str) -> None:
    p = problem(parse_request, "GET", URL, header(dict(BASE, oauth_version=version)), b"", None)
    assert p.problem == "version_rejected"
    assert p.status == 400
    assert p.params == {"oauth_acceptable_versions": "1.0-1.0"}


@pytest.mark.parametrize("nonce", ["1", "a.b", "x" * 64, "A-Z_a~z.0", "abc123"])
def test_nonce_shapes_accepted(nonce: str) -> None:
    assert parse_request("GET", URL, header(dict(BASE, oauth_nonce=nonce)), b"",
                         None).nonce == nonce


@pytest.mark.parametrize("nonce", ["x" * 65, "a%20b", "a%2Fb", "%C3%A9"])
def test_nonce_shapes_rejected(nonce: str) -> None:
    p = problem(parse_request, "GET", URL, header(dict(BASE, oauth_nonce=nonce)), b"", None)
    assert p.problem == "parameter_rejected"
    assert p.params == {"oauth_parameters_rejected": "oauth_nonce"}


@pytest.mark.parametrize("ts", ["137131200", "1", "1700000000"])
def test_short_timestamps_accepted(ts: str) -> None:
    assert parse_request("GET", URL, header(dict(BASE, oauth_timestamp=ts)), b"",
                         None).timestamp == ts


@pytest.mark.parametrize("ts", ["-1", "1.5", "abc", "1e9", "12345678901234567"])
def test_bad_timestamps_rejected(ts: str) -> None:
    p = problem(parse_request, "GET", URL, header(dict(BASE, oauth_timestamp=ts)), b"", None)
    assert p.problem == "parameter_rejected"
    assert p.params == {"oauth_parameters_rejected": "oauth_timestamp"}


@pytest.mark.parametrize(
    "auth",
    [
        'OAuth oauth_consumer_key="ck',
        "OAuth oauth_consumer_key",
        'OAuth a="b" c="d"',
        'OAuth =x',
        'OAuth a="%zz"',
        'OAuth a="%C3%28"',
    ],
)
def test_malformed_header(auth: str) -> None:
    p = problem(parse_request, "GET", URL, {"Authorization": auth}, b"", None)
    assert p.problem == "parameter_rejected"
    assert p.status == 400


@pytest.mark.parametrize(
    ("url", "body", "ctype"),
    [
        (URL + "?a=%G1", b"", None),
        (URL, b"a=%", FORM),
        (URL, "a=é".encode(), FORM),
        (URL, b"a=%FF", FORM),
    ],
)
def test_bad_encoding_rejected(url: str, body: bytes, ctype: str | None) -> None:
    p = problem(parse_request, "POST", url, header(BASE), body, ctype)
    assert p.problem == "parameter_rejected"


def test_bad_url_is_a_problem_not_an_exception() -> None:
    for url in ("/relative/path", "https://", "http://host:99999/x"):
        p = problem(parse_request, "GET", url, header(BASE), b"", None)
        assert p.problem == "parameter_rejected"


def test_base_uri_normalized() -> None:
    req = parse_request("get", "HTTPS://Jira.Example.COM:443/a%20b/c?x=1#frag", header(BASE),
                        b"", None)
    assert req.method == "GET"
    assert req.base_uri == "https://jira.example.com/a%20b/c"
    assert req.other_params == {"x": "1"}
    req = parse_request("GET", "http://example.com:8080", header(BASE), b"", None)
    assert req.base_uri == "http://example.com:8080/"


def test_empty_token_counts_as_two_legged() -> None:
    req = parse_request("GET", URL, header(dict(BASE, oauth_token="")), b"", None)
    assert req.token is None


def test_properties() -> None:
    params = dict(BASE, oauth_token="tk", oauth_verifier="v3r", oauth_callback="oob",
                  oauth_version="1.0")
    req = parse_request("GET", URL + "?xoauth_requestor_id=alice", header(params), b"", None)
    assert (req.consumer_key, req.token, req.signature_method, req.timestamp, req.nonce,
            req.callback, req.verifier, req.version) == (
        "ck", "tk", "HMAC-SHA1", "1700000000", "abc", "oob", "v3r", "1.0")
    assert req.other_params == {"xoauth_requestor_id": "alice"}


def test_parse_authorization_escaped_quote_and_bare_token() -> None:
    assert parse_authorization('OAuth realm="a\\"b", oauth_version=1.0, x="y\\"z"') == [
        ("oauth_version", "1.0"), ("x", 'y"z')
    ]
    assert parse_authorization("Bearer abc") is None
    assert parse_authorization("OAuthx a=b") is None
    assert parse_authorization("OAuth") == []


@pytest.mark.parametrize("bad", ["%00", "%01", "%0A", "%7F", "%C2%85"])
@pytest.mark.parametrize("name", ["oauth_consumer_key", "oauth_token", "oauth_nonce"])
def test_control_characters_in_oauth_parameters_are_rejected_by_name(name: str, bad: str
                                                                     ) -> None:
    """No identifier holds a control character (the store could not keep it, and a
    header could not carry it back): the parameter is named, nothing reaches a lookup."""
    params = {**BASE, "oauth_token": "tok", name: f"x{bad}y"}
    p = problem(parse_request, "POST", URL, header(params), b"", FORM)
    assert p.problem == "parameter_rejected"
    assert p.params == {"oauth_parameters_rejected": name}
