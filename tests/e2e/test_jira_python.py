"""Atlassian clients against real gunicorn front ends: jira-python (the `jira` package)
connects with the OAuth dictionary its documentation gives, reads serverInfo in its
constructor and calls myself; and the application-links manifest of a running
installation is read back through services/applinks_manifest.fetch_manifest
(docs/oauth.md, "Server info and the application-links manifest")."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import metadata

import pytest
from jira import JIRA, JIRAError
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1Session

from oauthledger.services import installation as inst
from oauthledger.services.applinks_manifest import (
    OAUTH,
    fetch_manifest,
    manifest_id,
    version_numbers,
)
from oauthledger.services.remote_fetch import FetchPolicy
from tests.e2e import servers as s

REQUEST = "/plugins/servlet/oauth/request-token"
ACCESS = "/plugins/servlet/oauth/access-token"


@pytest.fixture(scope="module")
def consumer(stack: s.Stack, rsa: s.RsaPair) -> s.Consumer:
    """An RSA-SHA1 consumer, as Jira's incoming application links register them."""
    return s.add_consumer(stack, rsa, methods=("RSA-SHA1",))


@pytest.fixture(autouse=True)
def quiet_jira() -> Iterator[None]:
    # jira-python first tries HMAC-SHA1 and logs the refusal with a traceback before it
    # falls back to RSA-SHA1; that is its normal path, not a failure of the test.
    logger = logging.getLogger("jira")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def rsa_access_token(stack: s.Stack, consumer: s.Consumer, user: str) -> dict[str, str]:
    """The three-legged dance with requests-oauthlib signing RSA-SHA1 and a browser
    approving: the access-token reply."""
    base = stack.url
    oauth = OAuth1Session(consumer.key, rsa_key=consumer.rsa.private_pem,
                          signature_method=SIGNATURE_RSA, callback_uri=s.CALLBACK)
    rt = oauth.fetch_request_token(base + REQUEST)
    decision = s.Browser(base).decide(s.authorize_url(base, rt["oauth_token"]), user)
    verifier = s.callback_params(decision)["oauth_verifier"]
    return dict(oauth.fetch_access_token(base + ACCESS, verifier=verifier))


def jira_oauth(consumer: s.Consumer, access: dict[str, str], **extra: str) -> dict[str, str]:
    """The ``oauth`` argument of jira.JIRA, keyed as jira-python reads it."""
    return {"access_token": access["oauth_token"],
            "access_token_secret": access["oauth_token_secret"],
            "consumer_key": consumer.key, "key_cert": consumer.rsa.private_pem, **extra}


def test_jira_python_connects_with_oauth_and_reads_myself_and_server_info(
        stack: s.Stack, consumer: s.Consumer, user: str) -> None:
    """The constructor's OAuth probe (myself) and serverInfo both succeed, on the other
    front end than the one that issued the token."""
    access = rsa_access_token(stack, consumer, user)
    client = JIRA(server=stack.servers[1].url, oauth=jira_oauth(consumer, access))
    try:
        me = client.myself()
        assert me["name"] == user
        assert me["displayName"] == f"User {user}"
        assert me["oauth"]["consumerKey"] == consumer.key
        assert client.current_user() == user  # "name" on a Server deployment
        info = client.server_info()
        version = metadata.version("oauthledger")
        assert info["version"] == version
        assert info["versionNumbers"] == list(version_numbers(version))
        assert info["deploymentType"] == "Server"
        assert info["baseUrl"] == stack.servers[1].url
        # What the constructor took from it.
        assert client._version == tuple(version_numbers(version))
        assert client.deploymentType == "Server"
        assert not client._is_cloud
    finally:
        client.close()


def test_jira_python_with_the_signature_method_named(stack: s.Stack, consumer: s.Consumer,
                                                     user: str) -> None:
    """oauth['signature_method'] skips jira-python's HMAC-SHA1 attempt."""
    access = rsa_access_token(stack, consumer, user)
    client = JIRA(server=stack.url,
                  oauth=jira_oauth(consumer, access, signature_method=SIGNATURE_RSA))
    try:
        assert client.myself()["name"] == user
    finally:
        client.close()


def test_jira_python_with_a_token_it_does_not_hold_fails_in_the_constructor(
        stack: s.Stack, consumer: s.Consumer, user: str) -> None:
    """Another consumer presenting the token: every signature method jira-python tries
    is refused, and the refusal is the 401 it raises."""
    access = rsa_access_token(stack, consumer, user)
    other = s.add_consumer(stack, s.rsa_pair(), methods=("RSA-SHA1",))
    with pytest.raises(JIRAError) as caught:
        JIRA(server=stack.url, oauth=jira_oauth(other, access))
    assert caught.value.status_code == 401


def test_fetch_manifest_reads_a_running_installation(stack: s.Stack) -> None:
    """The manifest names the installation, says it speaks OAuth, and its id is the same
    on every front end and on a front end started later (a restart)."""
    deps = stack.deps()
    state = inst.ensure_installation(deps.ledger, deps.sealer, {"actor": "e2e"})
    # The test process is not the server, and the servers are on loopback.
    policy = FetchPolicy(allow_private=True)
    manifests = [fetch_manifest(server.url, policy) for server in stack.servers]
    with s.extra_server(stack) as later:
        manifests.append(fetch_manifest(later.url + "/", policy))
        urls = [server.url for server in stack.servers] + [later.url]
    for manifest, url in zip(manifests, urls, strict=True):
        assert manifest is not None
        assert manifest.id == manifest_id(state.key)
        assert manifest.name == state.name
        assert manifest.base_url == url
        assert manifest.version == metadata.version("oauthledger")
        assert manifest.speaks_oauth and OAUTH in manifest.outbound_authentication_types


def test_fetch_manifest_of_an_application_without_one_is_none(stack: s.Stack) -> None:
    """A running server under a context path it does not have: 404, so no manifest."""
    assert fetch_manifest(stack.url + "/no-such-context",
                          FetchPolicy(allow_private=True)) is None
