"""docs/operations.md, "Logs", through real processes: with OAUTHLEDGER_LOG_FORMAT=json a
gunicorn front end, an ``oauthledger worker`` and an ``oauthledger beat`` write nothing
but JSON lines with the documented fields; the request id of the application's lines is
the access line's and the X-Request-Id header's; and after the dance with HMAC-SHA1,
PLAINTEXT (its secrets in the query string) and RSA-SHA1, a renewal, refused requests,
admin API calls with Basic and with the browser session and its anti-CSRF token, two
consumer secret resets and password sign-ins, no secret any of it created or sent
appears in any log of any process."""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
import requests
from oauthlib.oauth1 import SIGNATURE_TYPE_QUERY, Client

from oauthledger.services.logs import FIELDS
from oauthledger.services.users import register_user
from tests.e2e import servers as s

API = "/rest/oauthledger/1"
MYSELF = "/rest/api/2/myself"
REQUEST = "/plugins/servlet/oauth/request-token"
ACCESS = "/plugins/servlet/oauth/access-token"
ADMIN_PAGE = "/plugins/servlet/oauth/admin"
ADMIN_PASSWORD = "admin-pa55word-" + uuid.uuid4().hex[:8]
META = {"actor": "e2e"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Seen:
    """Every secret the scenario created or sent, and the responses whose access lines
    are checked (response, route template)."""

    secrets: dict[str, str] = field(default_factory=dict)
    responses: list[tuple[requests.Response, str]] = field(default_factory=list)

    def secret(self, what: str, value: str | None) -> None:
        """Remember a secret (at least 8 characters: nothing shorter is generated)."""
        assert value and len(value) >= 8, (what, value)
        self.secrets[f"{what} #{len(self.secrets)}"] = value

    def answer(self, resp: requests.Response, route: str) -> requests.Response:
        """Remember a response whose access line must name ``route``."""
        self.responses.append((resp, route))
        return resp


@pytest.fixture(scope="module")
def stack() -> Iterator[s.Stack]:
    """A JSON-logging deployment: one gunicorn front end, and a worker and beat started
    the way deploy/ starts them (``oauthledger worker``, ``oauthledger beat``)."""
    st = s.make_stack(servers=1, worker=False, OAUTHLEDGER_LOG_FORMAT="json",
                      OAUTHLEDGER_CATCHUP_INTERVAL="1s")
    try:
        st.worker = s.spawn("oauthledger-worker", [
            s.OAUTHLEDGER, "worker", "--concurrency", "1",
            "--name", f"logs-{uuid.uuid4().hex[:8]}@%h"], st.env, st.workdir)
        s.wait_until(lambda: "ready." in st.worker.log_tail(100_000), "the worker",
                     st.worker)
        beat_dir = st.workdir / "beat"
        beat_dir.mkdir()
        beat = s.spawn("oauthledger-beat", [s.OAUTHLEDGER, "beat"],
                       {**st.env, "OAUTHLEDGER_DATA_DIR": str(beat_dir)}, st.workdir)
        st.beat = beat  # type: ignore[attr-defined]
        s.wait_until(lambda: "beat: Starting" in beat.log_tail(100_000), "beat", beat)
        yield st
    finally:
        beat_proc = getattr(st, "beat", None)
        if beat_proc is not None:
            beat_proc.stop()
        st.close()


# -- signing, keeping every signature ---------------------------------------------------

_SIGNATURE = re.compile(r'oauth_signature="([^"]+)"')


def signed(seen: Seen, client: Client, method: str, url: str, route: str,
           form: dict[str, str] | None = None) -> requests.Response:
    """Send a request signed by ``client``, remembering its signature."""
    body = form or None
    uri, headers, signed_body = client.sign(url, http_method=method, body=body,
                                            headers=FORM if body else None)
    sent = _SIGNATURE.search(headers.get("Authorization", ""))
    value = sent.group(1) if sent else dict(parse_qsl(uri.split("?", 1)[1]))["oauth_signature"]
    seen.secret(f"signature {client.signature_method}", value)
    resp = requests.request(method, uri, headers=headers, data=signed_body, timeout=10)
    return seen.answer(resp, route)


def dance(stack: s.Stack, seen: Seen, key: str, user: str, method: str, *,
          secret: str | None = None, rsa: s.RsaPair | None = None,
          query: bool = False) -> dict[str, str]:
    """The three-legged dance with ``method``; returns the access-token reply."""
    base = stack.url
    creds: dict[str, Any] = {"client_secret": secret} if rsa is None else {
        "rsa_key": rsa.private_pem}
    resp = signed(seen, Client(key, signature_method=method, callback_uri=s.CALLBACK, **creds),
                  "POST", base + REQUEST, REQUEST)
    assert resp.status_code == 200, resp.text
    rt = dict(parse_qsl(resp.text))
    seen.secret("request token secret", rt["oauth_token_secret"])

    browser = s.Browser(base)
    decision = browser.decide(s.authorize_url(base, rt["oauth_token"]), user)
    keep_session(seen, browser)
    verifier = s.callback_params(decision)["oauth_verifier"]
    seen.secret("verifier", verifier)

    resp = signed(seen, Client(key, signature_method=method, resource_owner_key=rt["oauth_token"],
                               resource_owner_secret=rt["oauth_token_secret"],
                               verifier=verifier, **creds), "POST", base + ACCESS, ACCESS)
    assert resp.status_code == 200, resp.text
    access = dict(parse_qsl(resp.text))
    seen.secret("access token secret", access["oauth_token_secret"])
    seen.secret("session handle", access["oauth_session_handle"])

    kind = SIGNATURE_TYPE_QUERY if query else "AUTH_HEADER"
    resp = signed(seen, Client(key, signature_method=method, signature_type=kind,
                               resource_owner_key=access["oauth_token"],
                               resource_owner_secret=access["oauth_token_secret"], **creds),
                  "GET", base + MYSELF, MYSELF)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == user
    return access


def keep_session(seen: Seen, browser: s.Browser) -> str:
    """Remember the browser's session cookie and its anti-CSRF token; returns the token."""
    seen.secret("session cookie", browser.http.cookies.get("oauthledger_session"))
    page = browser.get("/")
    csrf = next(f["inputs"]["csrf_token"] for f in s.parse_forms(page.text)
                if "csrf_token" in f["inputs"])
    seen.secret("csrf token", csrf)
    return csrf


# -- the scenario -----------------------------------------------------------------------


def run_scenario(stack: s.Stack, rsa: s.RsaPair) -> tuple[Seen, dict[str, Any]]:
    """Everything that creates or sends a secret; returns what was seen and the facts the
    log checks need (the consumer, user, and particular responses)."""
    seen = Seen()
    base = stack.url
    deps = stack.deps()
    admin, user = s.unique("admin"), s.unique("user")
    register_user(deps.ledger, admin, ADMIN_PASSWORD, admin=True, meta=META)
    register_user(deps.ledger, user, s.PASSWORD, meta=META)
    seen.secret("admin password", ADMIN_PASSWORD)
    seen.secret("user password", s.PASSWORD)
    basic = (admin, ADMIN_PASSWORD)

    # Admin API with Basic: register a consumer with a generated secret.
    key = s.unique("consumer")
    resp = seen.answer(requests.post(base + f"{API}/consumers", auth=basic, timeout=10, json={
        "key": key, "name": "Logs client", "generateSecret": True,
        "publicKey": rsa.public_pem, "callbackUrl": s.CALLBACK,
        "allowPlaintextOverHttp": True,
        "signatureMethods": ["HMAC-SHA1", "RSA-SHA1", "PLAINTEXT"]}), f"{API}/consumers")
    assert resp.status_code == 201, resp.text
    secret = resp.json()["sharedSecret"]
    seen.secret("consumer secret", secret)

    hmac = dance(stack, seen, key, user, "HMAC-SHA1", secret=secret)
    dance(stack, seen, key, user, "PLAINTEXT", secret=secret, query=True)
    dance(stack, seen, key, user, "RSA-SHA1", rsa=rsa)

    # Renewal with the session handle, then the renewed token works.
    resp = signed(seen, Client(key, client_secret=secret, resource_owner_key=hmac["oauth_token"],
                               resource_owner_secret=hmac["oauth_token_secret"]),
                  "POST", base + ACCESS, ACCESS,
                  form={"oauth_session_handle": hmac["oauth_session_handle"]})
    assert resp.status_code == 200, resp.text
    renewed = dict(parse_qsl(resp.text))
    seen.secret("renewed token secret", renewed["oauth_token_secret"])
    seen.secret("renewed session handle", renewed["oauth_session_handle"])
    accepted = signed(seen, Client(key, client_secret=secret,
                                   resource_owner_key=renewed["oauth_token"],
                                   resource_owner_secret=renewed["oauth_token_secret"]),
                      "GET", base + MYSELF, MYSELF)
    assert accepted.status_code == 200, accepted.text

    # Refused: a wrong secret (signature_invalid) and the token renewal replaced.
    wrong = "wrong-" + uuid.uuid4().hex
    seen.secret("wrong secret sent", wrong)
    refused = signed(seen, Client(key, client_secret=wrong,
                                  resource_owner_key=renewed["oauth_token"],
                                  resource_owner_secret=renewed["oauth_token_secret"]),
                     "GET", base + MYSELF, MYSELF)
    assert refused.status_code == 401
    assert 'oauth_problem="signature_invalid"' in refused.headers["WWW-Authenticate"]
    used = signed(seen, Client(key, client_secret=secret, resource_owner_key=hmac["oauth_token"],
                               resource_owner_secret=hmac["oauth_token_secret"]),
                  "GET", base + MYSELF, MYSELF)
    assert used.status_code == 401

    # Admin API with Basic: list, and reset the consumer's secret.
    resp = seen.answer(requests.get(base + f"{API}/consumers", auth=basic, timeout=10),
                       f"{API}/consumers")
    assert resp.status_code == 200
    resp = seen.answer(requests.post(base + f"{API}/consumer-secrets/{quote(key)}", auth=basic,
                                     timeout=10), f"{API}/consumer-secrets/{{key:path}}")
    assert resp.status_code == 200, resp.text
    seen.secret("reset consumer secret (Basic)", resp.json()["sharedSecret"])

    # Admin API through the browser session: sign in with the password, then a change
    # with the session's anti-CSRF token (and one without it, refused).
    browser = s.Browser(base)
    login = browser.get(ADMIN_PAGE)
    assert "/login" in login.url, login.url
    page = browser.submit(login, {"username": admin, "password": ADMIN_PASSWORD})
    assert page.status_code == 200 and "/login" not in page.url, page.text
    csrf = keep_session(seen, browser)
    url = base + f"{API}/consumer-secrets/{quote(key)}"
    resp = seen.answer(browser.http.post(url, timeout=10),
                       f"{API}/consumer-secrets/{{key:path}}")
    assert resp.status_code == 403
    chosen = "chosen-" + uuid.uuid4().hex
    resp = seen.answer(browser.http.post(url, headers={"X-CSRF-Token": csrf}, timeout=10,
                                         json={"sharedSecret": chosen}),
                       f"{API}/consumer-secrets/{{key:path}}")
    assert resp.status_code == 200, resp.text
    seen.secret("reset consumer secret (session)", chosen)

    # An admin call with a secret-looking parameter in its query string (refused: a
    # base URL has no query); the access line writes no query at all.
    decoy = "decoy-" + uuid.uuid4().hex
    seen.secret("secret in a logged URL", decoy)
    fetched = seen.answer(requests.get(
        base + f"{API}/remote-consumer-info", auth=basic, timeout=10,
        params={"baseUrl": f"http://127.0.0.1:9/jira?oauth_token_secret={decoy}"}),
        f"{API}/remote-consumer-info")
    assert fetched.status_code in (400, 422), fetched.text
    # An admin call the application logs about: add by URL refuses a private address
    # and logs why at INFO, during the request.
    fetched_private = seen.answer(requests.get(
        base + f"{API}/remote-consumer-info", auth=basic, timeout=10,
        params={"baseUrl": "http://127.0.0.1:9/jira"}), f"{API}/remote-consumer-info")
    assert fetched_private.status_code in (400, 422), fetched_private.text

    # A client's own X-Request-Id is not taken: this front end trusts no proxy.
    chosen_id = "client-chosen-" + uuid.uuid4().hex[:8]
    health = seen.answer(requests.get(base + "/healthz", headers={"X-Request-Id": chosen_id},
                                      timeout=10), "/healthz")
    assert health.headers["X-Request-Id"] not in ("", chosen_id)

    return seen, {"key": key, "user": user, "accepted": accepted, "refused": refused,
                  "used": used, "fetched": fetched_private}


def read_lines(paths: list[Path]) -> dict[Path, list[str]]:
    """Every non-empty line of each log file."""
    return {p: [line for line in p.read_text(errors="replace").splitlines() if line.strip()]
            for p in paths}


def test_json_logs_of_every_process_hold_no_secret(stack: s.Stack, rsa: s.RsaPair) -> None:
    seen, facts = run_scenario(stack, rsa)
    worker, beat = stack.worker, stack.beat  # type: ignore[attr-defined]
    assert worker is not None
    # The worker ran tasks (beat's catch-ups, the front end's wake-ups) while we watched.
    s.wait_until(lambda: '"task_name":"oauthledger.' in worker.log_tail(10**7),
                 "a task's line in the worker's log", worker)
    # A pool process killed by a signal of its own (a service manager's SIGTERM to the
    # whole group can reach it before the worker's shutdown does) is reported by
    # billiard's logger, which does not propagate: its line must be JSON too.
    pool = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text()
    os.kill(int(pool.split()[0]), signal.SIGTERM)
    s.wait_until(lambda: "exited with 'signal 15 (SIGTERM)'" in worker.log_tail(10**7),
                 "the worker's report of its killed pool process", worker)
    # Stop everything first, so every line is written (shutdown lines included).
    for server in stack.servers:
        server.stop()
    worker.stop()
    beat.stop()

    files = read_lines([server.process.log_path for server in stack.servers]
                       + [worker.log_path, beat.log_path])
    docs: list[dict[str, Any]] = []
    for path, lines in files.items():
        assert lines, f"{path.name} is empty"
        for line in lines:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{path.name}: not a JSON line: {line[:300]}")
            assert isinstance(doc, dict) and list(doc)[:len(FIELDS)] == list(FIELDS), line
            docs.append(doc)

    # No secret, as sent or percent-encoded, anywhere in any file.
    texts = {path.name: "\n".join(lines) for path, lines in files.items()}
    for what, value in seen.secrets.items():
        for form in {value, quote(value, safe=""), quote(value, safe="/")}:
            for name, text in texts.items():
                assert form not in text, f"{what} appears in {name}"

    # One access line per request, with the request id the client got, the status, and
    # the route template (never the path).
    access = [d for d in docs if d["logger"] == "gunicorn.access"]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for d in access:
        by_id.setdefault(d["request_id"], []).append(d)
    for resp, route in seen.responses:
        rid = resp.headers["X-Request-Id"]
        lines = by_id.get(rid, [])
        assert len(lines) == 1, (rid, route, lines)
        assert lines[0]["status"] == resp.status_code and lines[0]["route"] == route
        assert isinstance(lines[0]["duration_ms"], int | float)

    [ok] = by_id[facts["accepted"].headers["X-Request-Id"]]
    assert (ok["consumer_key"], ok["user"], ok["oauth_problem"]) == (facts["key"],
                                                                     facts["user"], None)
    for name, problem in (("refused", "signature_invalid"), ("used", "token_used")):
        [no] = by_id[facts[name].headers["X-Request-Id"]]
        assert no["status"] == 401 and no["oauth_problem"] == problem, no
        # A registered consumer's key is named on a refusal too; no user.
        assert no["consumer_key"] == facts["key"] and no["user"] is None, no

    # The application's own lines of a request carry its request id: the access line's
    # and the X-Request-Id header's.
    rid = facts["fetched"].headers["X-Request-Id"]
    app_lines = [d for d in docs if d["logger"] == "oauthledger.services.remote_fetch"
                 and d["request_id"] == rid]
    assert app_lines, "the add-by-URL refusal was not logged with its request id"
    assert all(d["route"] == f"{API}/remote-consumer-info" for d in app_lines)
    assert by_id[rid][0]["request_id"] == rid
    # Worker and beat lines are JSON with the same fields (checked above), from both.
    assert any(d["logger"].startswith("celery.beat") for d in docs)
    assert any(d.get("task_name", "").startswith("oauthledger.") for d in docs)
