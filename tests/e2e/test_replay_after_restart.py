"""A restart of the embedded default forgets the nonces it remembered (they lived in the
process's in-process Redis), yet a request captured before the restart is still refused
after it: it was signed before the new nonce memory started (docs/oauth.md, "Replays
across restarts"). Real gunicorn processes, stopped and started on the same data
directory; the request is signed by requests-oauthlib and sent byte for byte again."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

import requests
from requests_oauthlib import OAuth1

from oauthledger.events.settings import load_settings
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.deps import build_deps
from oauthledger.services.users import register_user
from tests.e2e import servers as s

MYSELF = "/rest/api/2/myself"
KEY = "replay-app"
SECRET = "replay-secret-0123456789"


def register(env: dict[str, str]) -> None:
    """A user and a two-legged consumer acting as that user, appended to the embedded
    store before the server starts (its start replays the log into its projection)."""
    deps = build_deps(load_settings(env), wake=lambda: None)
    try:
        register_user(deps.ledger, "alice", s.PASSWORD, meta={"actor": "e2e"})
        register_consumer(deps.ledger, deps.sealer, KEY, ConsumerInput(
            name="Replay app", secret=SECRET, signature_methods=["HMAC-SHA1"],
            two_legged_user="alice"), {"actor": "e2e"})
    finally:
        deps.redis.close()
        deps.store.engine.dispose()


def signed_get(url: str) -> requests.PreparedRequest:
    """GET ``url`` signed with HMAC-SHA1 (a fresh nonce and the current time)."""
    return requests.Request("GET", url, auth=OAuth1(KEY, client_secret=SECRET)).prepare()


def send(prepared: requests.PreparedRequest) -> requests.Response:
    with requests.Session() as session:
        return session.send(prepared, timeout=20)


def problem(resp: requests.Response) -> dict[str, str]:
    return dict(parse_qsl(resp.text))


def timestamp_of(prepared: requests.PreparedRequest) -> int:
    header = prepared.headers["Authorization"]
    text = header.decode() if isinstance(header, bytes) else header
    return int(re.search(r'oauth_timestamp="(\d+)"', text).group(1))  # type: ignore[union-attr]


def test_a_request_captured_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    env = s.embedded_env(tmp_path / "data")
    register(env)
    server = s.start_server(env, tmp_path, workers=None)
    try:
        captured = signed_get(server.url + MYSELF)
        first = send(captured)
        assert first.status_code == 200, first.text
        assert first.json()["name"] == "alice"
        replay = send(captured)  # the running server remembers the nonce
        assert (replay.status_code, problem(replay)["oauth_problem"]) == (401, "nonce_used")
    finally:
        server.stop()

    # The same data dir and port (the signature covers the URL): a new process, whose
    # in-process Redis starts empty.
    server = s.start_server(env, tmp_path, workers=None, port=server.port)
    try:
        replay = send(captured)
        body = problem(replay)
        assert (replay.status_code, body.get("oauth_problem")) == (400, "timestamp_refused"), \
            replay.text
        assert "replay memory started at" in body["oauth_problem_advice"]
        epoch = int(body["oauth_acceptable_timestamps"].split("-")[0])
        assert epoch > timestamp_of(captured)
        # Signed anew after the server answers: served (the embedded default starts
        # serving once its memory's first second has begun).
        fresh = send(signed_get(server.url + MYSELF))
        assert fresh.status_code == 200, fresh.text
    finally:
        server.stop()
