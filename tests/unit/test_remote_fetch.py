"""Vetting an "add by URL" target before anything is fetched (services/remote_fetch.py,
docs/admin.md "Add by URL"): the URL's shape, odd IPv4 spellings, and every address the
name resolves to. No connection is made here; tests/integration/test_consumer_info_fetch.py
fetches from real servers."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from oauthledger.events.settings import load_settings
from oauthledger.services import remote_fetch as rf
from oauthledger.services.errors import ValidationError

# Names resolved through a table: the vetting must judge every address a name has.
NAMES = {
    "consumer.example": ["93.184.215.14"],
    "v6.example": ["2606:4700:4700::1111"],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.215.14", "127.0.0.1"],
    "mapped.example": ["::ffff:192.168.1.1"],
    "nothing.example": [],
}


def table_resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise OSError(f"unknown host {host}")
    return NAMES[host]


STRICT = rf.FetchPolicy(resolver=table_resolver)
PRIVATE_OK = rf.FetchPolicy(allow_private=True, resolver=table_resolver)


def refusal(url: str, policy: rf.FetchPolicy = STRICT) -> str:
    with pytest.raises(ValidationError) as caught:
        rf.vet(url, policy)
    return caught.value.fields["base_url"]


NOT_ALLOWED = [
    # loopback, in every spelling getaddrinfo (inet_aton) or a browser would accept
    "http://127.0.0.1/", "http://0x7f000001/", "http://2130706433/", "http://0177.0.0.1/",
    "http://127.1/", "http://0x7f.0.0.1/", "http://017700000001/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    # private, CGNAT, unique local
    "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1:8080/",
    "http://100.64.0.1/", "http://[fd00::1]/", "http://[::ffff:10.0.0.1]/",
    # link-local (the cloud metadata service among them), unspecified, multicast, reserved
    "http://169.254.169.254/", "http://[fe80::1]/", "http://0.0.0.0/", "http://[::]/",
    "http://224.0.0.1/", "http://[ff02::1]/", "http://240.0.0.1/", "http://255.255.255.255/",
    "http://192.0.2.1/", "http://[2001:db8::1]/", "http://[fec0::1]/",
    # names that resolve there, or partly there
    "http://internal.example/", "http://metadata.example/", "http://mixed.example/",
    "http://mapped.example/",
]


@pytest.mark.parametrize("url", NOT_ALLOWED)
def test_hostile_addresses_are_refused(url: str) -> None:
    message = refusal(url)
    assert message.endswith(": the address is not allowed"), message
    assert message.startswith("could not fetch consumer info from ")


@pytest.mark.parametrize(("url", "says"), [
    ("http://admin:secret@consumer.example/", "user name or password"),
    ("http://consumer.example@10.0.0.1/", "user name or password"),
    ("http://consumer.example/?x=1", "query"),
    ("http://consumer.example/jira?", "query"),
    ("http://consumer.example/internal/status#", "fragment"),
    ("http://consumer.example/#/plugins/servlet/oauth/consumer-info", "fragment"),
    ("ftp://consumer.example/", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://consumer.example:70/", "http:// or https://"),
    ("//consumer.example/", "http:// or https://"),
    ("consumer.example", "http:// or https://"),
    ("http:/consumer.example/", "http:// or https://"),
    ("http://consumer.example\\@10.0.0.1/", "backslashes"),
    ("http://consumer.example/ja ra", "spaces"),
    ("http://consumer.example:0/", "port"),
    ("http://consumer.example:65536/", "port"),
    ("http://consumer.example/a/../secret", "context path"),
    ("http://consumer.example/./x", "context path"),
    ("http://consumer.example/%2e%2e/secret", "context path"),
    ("http://consumer.example/secret;x", "context path"),
    ("http://consumer.example//x", "context path"),
    ("http://bad_host-.example/", "host name"),
    ("", "required"),
    ("http://consumer.example/" + "a" * 2000, "2000 characters"),
])
def test_urls_that_could_aim_elsewhere_are_refused_with_a_clear_message(url: str,
                                                                          says: str) -> None:
    assert says in refusal(url, PRIVATE_OK)


@pytest.mark.parametrize(("url", "fetched", "addresses"), [
    ("http://consumer.example", "http://consumer.example/plugins/servlet/oauth/consumer-info",
     ["93.184.215.14"]),
    ("https://Consumer.Example./jira/",
     "https://consumer.example/jira/plugins/servlet/oauth/consumer-info", ["93.184.215.14"]),
    ("http://consumer.example:8090/jira/plugins/servlet/oauth/consumer-info",
     "http://consumer.example:8090/jira/plugins/servlet/oauth/consumer-info",
     ["93.184.215.14"]),
    ("http://v6.example/", "http://v6.example/plugins/servlet/oauth/consumer-info",
     ["2606:4700:4700::1111"]),
    ("https://8.8.8.8:8443/", "https://8.8.8.8:8443/plugins/servlet/oauth/consumer-info",
     ["8.8.8.8"]),
    ("http://[2606:4700:4700::1111]/",
     "http://[2606:4700:4700::1111]/plugins/servlet/oauth/consumer-info",
     ["2606:4700:4700::1111"]),
    # IPv4-mapped public addresses are judged (and reached) as the IPv4 address
    ("http://[::ffff:8.8.8.8]/", "http://[::ffff:808:808]/plugins/servlet/oauth/consumer-info",
     ["8.8.8.8"]),
])
def test_public_addresses_are_allowed_and_only_the_consumer_info_path_is_fetched(
        url: str, fetched: str, addresses: list[str]) -> None:
    got_url, got_addresses = rf.vet(url, STRICT)
    assert got_url == fetched
    assert got_addresses == [ipaddress.ip_address(a) for a in addresses]


def test_the_private_setting_opens_private_and_loopback_but_never_link_local() -> None:
    for url in ("http://127.0.0.1:8080/", "http://10.0.0.1/", "http://[::1]/",
                "http://[fd00::1]/", "http://100.64.0.1/", "http://internal.example/",
                "http://[::ffff:192.168.1.1]/"):
        rf.vet(url, PRIVATE_OK)
    for url in ("http://169.254.169.254/", "http://metadata.example/", "http://[fe80::1]/",
                "http://0.0.0.0/", "http://224.0.0.1/", "http://0x7f000001/",
                "http://2130706433/"):
        assert refusal(url, PRIVATE_OK).endswith("the address is not allowed"), url


def test_the_setting_comes_from_the_environment_and_is_off_by_default(tmp_path) -> None:
    base = {"OAUTHLEDGER_DATA_DIR": str(tmp_path)}
    assert not load_settings(base).fetch_allow_private
    on = load_settings({**base, "OAUTHLEDGER_FETCH_ALLOW_PRIVATE": "1"})
    assert on.fetch_allow_private
    assert rf.policy(on).allow_private and not rf.policy(load_settings(base)).allow_private


def test_names_that_do_not_resolve_give_the_generic_message_and_log_the_detail(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="oauthledger.services.remote_fetch"):
        message = refusal("http://unknown.example/")
        assert message == "could not fetch consumer info from unknown.example: " \
                          "no valid consumer info there"
        assert refusal("http://nothing.example/").endswith("no valid consumer info there")
    assert "unknown host unknown.example" in caplog.text


def test_this_server_is_never_a_target() -> None:
    settings = load_settings({"OAUTHLEDGER_BASE_URL": "https://ledger.example/ol",
                              "OAUTHLEDGER_FETCH_ALLOW_PRIVATE": "true"})
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8080",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"}
    own = rf.policy(settings, environ, resolver=table_resolver)
    for url in ("https://ledger.example/ol", "http://127.0.0.1:8080/",
                "http://[::ffff:127.0.0.1]:8080/"):
        assert "this server itself" in refusal(url, own), url
    rf.vet("http://127.0.0.1:8081/", own)  # another port: another application

    # Bound to every address: any address of this host on that port is this server.
    anywhere = rf.policy(settings, {"SERVER_NAME": "0.0.0.0", "SERVER_PORT": "9090"},
                         resolver=table_resolver)
    assert "this server itself" in refusal("http://127.0.0.5:9090/", anywhere)
    rf.vet("http://10.255.255.1:9090/", anywhere)  # not an address of this host
