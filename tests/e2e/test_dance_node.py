"""The dance driven by a Node.js consumer built on the npm ``oauth`` library
(tests/e2e/node/client.js; tests/run installs it with ``npm ci``): every method that
library signs with (HMAC-SHA1, HMAC-SHA256, RSA-SHA1, PLAINTEXT), callback and oob."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import servers as s

NODE_DIR = Path(__file__).with_name("node")
NODE_METHODS = ("HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1", "PLAINTEXT")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the client's dependencies installed (tests/run: npm ci)."""
    exe = shutil.which("node")
    assert exe, "Node.js is required for tests/e2e (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "oauth").is_dir():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                       check=True, timeout=300)
    return exe


@pytest.fixture(scope="module")
def consumer(stack: s.Stack) -> s.Consumer:
    """A consumer allowed every method (PLAINTEXT over http too)."""
    return s.add_consumer(stack, s.rsa_pair(), allow_plaintext_over_http=True)


def run(node: str, consumer: s.Consumer, method: str, step: str, base: str,
        **cfg: Any) -> dict[str, Any]:
    """One step of client.js; its JSON answer."""
    config = {"step": step, "base": base, "consumerKey": consumer.key,
              "consumerSecret": consumer.secret, "privateKey": consumer.rsa.private_pem,
              "signatureMethod": method, **cfg}
    done = subprocess.run([node, "client.js", json.dumps(config)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("callback", [s.CALLBACK, "oob"])
@pytest.mark.parametrize("method", NODE_METHODS)
def test_node_client_dance(node: str, stack: s.Stack, consumer: s.Consumer, user: str,
                           method: str, callback: str) -> None:
    """Request token and access token from front end A, the resource call on B."""
    a, b = stack.servers[0].url, stack.servers[1].url
    rt = run(node, consumer, method, "request-token", a, callback=callback)
    assert "error" not in rt, rt
    assert rt["results"]["oauth_callback_confirmed"] == "true"
    decision = s.Browser(a).decide(s.authorize_url(a, rt["token"]), user)
    if callback == "oob":
        verifier = s.element_text(decision.text, "oauth-verifier")
    else:
        verifier = s.callback_params(decision)["oauth_verifier"]
    assert verifier
    at = run(node, consumer, method, "access-token", a, token=rt["token"],
             tokenSecret=rt["tokenSecret"], verifier=verifier)
    assert "error" not in at, at
    assert at["results"]["oauth_session_handle"]
    me = run(node, consumer, method, "get", b, token=at["token"],
             tokenSecret=at["tokenSecret"], path="/rest/api/2/myself")
    assert "error" not in me, me
    assert me["statusCode"] == 200
    assert me["body"]["name"] == user
    assert me["body"]["oauth"]["consumerKey"] == consumer.key


def test_node_client_sees_problem(node: str, stack: s.Stack, consumer: s.Consumer) -> None:
    """A wrong secret: the library reports the 401 and the form-encoded problem."""
    wrong = s.Consumer(consumer.key, "not-the-secret", consumer.rsa, consumer.name)
    rt = run(node, wrong, "HMAC-SHA1", "request-token", stack.url, callback="oob")
    assert rt["error"]["statusCode"] == 401
    assert "oauth_problem=signature_invalid" in rt["error"]["data"]
