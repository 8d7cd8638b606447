"""signed_url: the URL the client signed, from base URL, trusted proxy headers, or the
request itself."""

from __future__ import annotations

import ipaddress

from oauthledger.services.oauth.urls import is_trusted, signed_url

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
FWD = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "jira.example.com"}


def url(**kw) -> str:
    args = dict(base_url=None, scheme="http", host="127.0.0.1:8080",
                path="/rest/api/2/issue/ABC-1", query="expand=names", remote_addr="10.1.2.3",
                headers={}, trusted_proxies=PROXIES)
    args.update(kw)
    return signed_url(**args)


def test_request_itself() -> None:
    assert url() == "http://127.0.0.1:8080/rest/api/2/issue/ABC-1?expand=names"
    assert url(query="") == "http://127.0.0.1:8080/rest/api/2/issue/ABC-1"


def test_base_url_wins_with_prefix() -> None:
    assert url(base_url="https://jira.example.com/jira", headers=FWD) == (
        "https://jira.example.com/jira/rest/api/2/issue/ABC-1?expand=names"
    )
    # A proxy that does not strip the prefix: not doubled.
    assert url(base_url="https://jira.example.com/jira/", path="/jira/rest/x", query="") == (
        "https://jira.example.com/jira/rest/x"
    )
    assert url(base_url="https://jira.example.com:8443", query="") == (
        "https://jira.example.com:8443/rest/api/2/issue/ABC-1"
    )


def test_forwarded_headers_from_trusted_proxy() -> None:
    assert url(headers=FWD) == "https://jira.example.com/rest/api/2/issue/ABC-1?expand=names"
    assert url(headers={**FWD, "X-Forwarded-Port": "8443"}, query="") == (
        "https://jira.example.com:8443/rest/api/2/issue/ABC-1"
    )
    assert url(headers={**FWD, "X-Forwarded-Port": "443"}, query="") == (
        "https://jira.example.com/rest/api/2/issue/ABC-1"
    )
    # WSGI-style names and several proxies: the first value is the client-facing one.
    environ_style = {"HTTP_X_FORWARDED_PROTO": "https, http",
                     "HTTP_X_FORWARDED_HOST": "jira.example.com, 10.0.0.2"}
    headers = {k[5:]: v for k, v in environ_style.items()}
    assert url(headers=headers, query="") == "https://jira.example.com/rest/api/2/issue/ABC-1"
    assert url(headers={**FWD, "X-Forwarded-Prefix": "/jira"}, query="") == (
        "https://jira.example.com/jira/rest/api/2/issue/ABC-1"
    )


def test_rfc7239_forwarded() -> None:
    h = {"Forwarded": 'for=192.0.2.60;proto=https;host="jira.example.com:8443", for=10.0.0.2'}
    assert url(headers=h, query="") == "https://jira.example.com:8443/rest/api/2/issue/ABC-1"


def test_port_only_replaces_the_host_port() -> None:
    h = {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "9443"}
    assert url(headers=h, host="app.internal:8080", query="") == (
        "https://app.internal:9443/rest/api/2/issue/ABC-1"
    )


def test_untrusted_proxy_headers_ignored() -> None:
    for addr in ("192.0.2.1", None, "not-an-ip"):
        assert url(headers=FWD, remote_addr=addr, query="") == (
            "http://127.0.0.1:8080/rest/api/2/issue/ABC-1"
        )
    assert url(headers=FWD, trusted_proxies=(), query="") == (
        "http://127.0.0.1:8080/rest/api/2/issue/ABC-1"
    )


def test_ipv6_proxy_and_host() -> None:
    assert is_trusted("::1", PROXIES)
    assert is_trusted("[::1]", PROXIES)
    h = {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "8443"}
    assert url(headers=h, host="[::1]", remote_addr="::1", query="") == (
        "https://[::1]:8443/rest/api/2/issue/ABC-1"
    )


def test_decoded_path_is_reencoded() -> None:
    assert url(path="/a b/é", query="") == "http://127.0.0.1:8080/a%20b/%C3%A9"
    assert url(path="/already%20encoded", query="") == "http://127.0.0.1:8080/already%20encoded"
    assert url(path="", query="") == "http://127.0.0.1:8080/"
