"""Redirect targets judged as a browser reads them: known bypasses, and properties over
generated hostile URLs (whatever is accepted resolves, browser-style, where we think)."""

from __future__ import annotations

import contextlib

import ada_url
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthledger.events.state import ConsumerState
from oauthledger.services.dance import check_callback
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.redirects import absolute_http_url, local_target

GOOD = "https://good.example.com/cb"


def _consumer(callback_url: str | None) -> ConsumerState:
    return ConsumerState(key="c", name="C", description="", callback_url=callback_url,
                         public_key=None, secret_sealed="s", signature_methods=("HMAC-SHA1",),
                         three_legged=True, two_legged_user=None, allow_impersonation=False,
                         allow_oauth10=False, allow_plaintext_over_http=False)


@pytest.mark.parametrize("target", [
    "/\t/evil.example.com", "/\n/evil.example.com", "/\r\n/evil.example.com",
    "//evil.example.com", "/\\evil.example.com", "\\/evil.example.com", "/\\/evil.example.com",
    "https://evil.example.com/", "javascript:alert(1)", " /x", "", None, "evil.example.com",
    "/\t\\evil.example.com",
])
def test_local_target_refuses_what_leaves_the_site(target: str | None) -> None:
    assert local_target(target) == "/"


@pytest.mark.parametrize(("target", "expected"), [
    ("/plugins/servlet/oauth/authorize?oauth_token=abc",
     "/plugins/servlet/oauth/authorize?oauth_token=abc"),
    ("/%09/evil.example.com/", "/%09/evil.example.com/"), ("/x#frag", "/x"),
    ("/a b", "/a%20b"), ("/€", "/%E2%82%AC"), ("/x\x00y", "/x%00y"), ("/x\x7fy", "/x%7Fy"),
    ("/x\x0by", "/x%0By"),
])
def test_local_target_keeps_local_paths_in_header_safe_form(target: str, expected: str) -> None:
    assert local_target(target) == expected


@pytest.mark.parametrize("callback", [
    "https://evil.example.com\\@good.example.com/cb",   # a browser reads "\" as "/"
    "https://evil.example.com@good.example.com/cb",     # user info
    "https://@good.example.com/cb", "https://user:pw@good.example.com/cb",
    "https://good.example.com\t.evil.example.com/cb", "https://good.example.com/c\nb",
    "https://good.example.com/c b", "https://good.example.com/€", "https://good.example.com/\x00",
    "https://good.example.com/\x7f", "ftp://good.example.com/cb", "https:///cb", "/cb",
    "https:good.example.com/cb", "https:/good.example.com/cb",
    "https://good.example.com/" + "a" * 2001,
])
def test_ambiguous_or_non_http_callbacks_are_refused(callback: str) -> None:
    assert absolute_http_url(callback) is None
    with pytest.raises(OAuthProblem):
        check_callback(_consumer(GOOD), callback)


@pytest.mark.parametrize(("callback", "same"), [
    ("https://good.example.com/other?x=1#y", True),
    ("https://GOOD.example.com:443/cb", True),
    ("https://good.example.com:8443/cb", False),
    ("http://good.example.com/cb", False),
    ("https://good.example.com.evil.example.com/cb", False),
])
def test_a_callback_must_share_the_registered_origin(callback: str, same: bool) -> None:
    """The origin is compared as a browser computes it (host case, default port)."""
    if same:
        assert check_callback(_consumer(GOOD), callback) == callback
    else:
        with pytest.raises(OAuthProblem) as err:
            check_callback(_consumer(GOOD), callback)
        assert err.value.problem == "parameter_rejected"


# Pieces an attacker combines: separators browsers treat specially, encodings, hosts.
_PIECES = st.sampled_from([
    "\\", "/", "//", "@", ":", "\t", "\n", "\r", " ", "%09", "%2F", "%5C", "%40", "#", "?",
    ".", "..", "evil.example.com", "good.example.com", "https:", "http:", "javascript:",
    "\x00", "\x7f", "€", "good.example.com:443", "0x7f000001", "[::1]", "%2e%2e",
])
_HOSTILE = st.lists(_PIECES | st.text(max_size=3), max_size=10).map("".join)


@settings(max_examples=600, deadline=None)
@given(prefix=st.sampled_from(["https://", "https:", "http://", "https:/", "https:\\\\", ""]),
       rest=_HOSTILE)
def test_accepted_callbacks_go_where_we_think(prefix: str, rest: str) -> None:
    url = prefix + rest
    checked = absolute_http_url(url)
    if checked is None:
        return
    # What a browser does with the raw text: the same origin as we computed.
    browser = ada_url.URL(url)
    assert browser.origin == str(checked.origin)
    assert not browser.username and not browser.password
    # What the dance accepts for a consumer registered at GOOD, a browser sends to GOOD.
    with contextlib.suppress(OAuthProblem):
        check_callback(_consumer(GOOD), url)
        assert browser.origin == "https://good.example.com"
    # Header-safe: plain printable ASCII only.
    assert all(0x21 <= ord(c) <= 0x7E for c in url)


@settings(max_examples=600, deadline=None)
@given(rest=_HOSTILE)
def test_followed_next_targets_stay_on_the_site(rest: str) -> None:
    out = local_target("/" + rest)
    resolved = ada_url.URL(out, "https://oauthledger.example/")
    assert resolved.origin == "https://oauthledger.example"
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out
    assert all(0x21 <= ord(c) <= 0x7E for c in out)


@pytest.mark.parametrize("callback", [
    "https://evil.example.com\\@good.example.com/cb", "https://evil.example.com@good.example.com/cb",
    "https://good.example.com/cb\x00", "https://good.example.com/cb\x0b", "https://good.example.com/€",
    "https://good.example.com/\x7f", "https://evil.example.com/cb",
])
def test_the_dance_refuses_callbacks_a_browser_would_send_elsewhere(callback: str) -> None:
    with pytest.raises(OAuthProblem) as err:
        check_callback(_consumer(GOOD), callback)
    assert err.value.problem == "parameter_rejected"


def test_the_dance_keeps_a_good_callback_and_oob() -> None:
    assert check_callback(_consumer(GOOD), "https://good.example.com/cb?x=1") == \
        "https://good.example.com/cb?x=1"
    assert check_callback(_consumer(None), "oob") == "oob"
    with pytest.raises(OAuthProblem):
        check_callback(_consumer(None), "https://evil.example.com\\@good.example.com/cb")
