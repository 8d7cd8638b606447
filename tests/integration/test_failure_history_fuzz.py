"""Hostile input against everything the failure history touches, on the embedded
dependencies and on PostgreSQL with the real Redis: signed-looking requests that name a
registered consumer but are otherwise garbage (so their refusals are recorded), and
arbitrary keys, limits and request ids for the JSON API, the debugger and the page. No
input may produce a 5xx, every recorded entry reads back as JSON within its size, and no
secret of the site is ever stored or shown (docs/admin.md, "Failure history").

Reproducible like the fuzz tier (tests/fuzz): derandomized, no example database, a
fixed number of examples."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oauthlib.oauth1 import Client

from oauthledger.events.failures import ENTRY_LIMIT
from oauthledger.services.failures import failure_history
from tests.integration.test_admin_api_pages import Browser
from tests.integration.test_failure_history import (
    ADMIN,
    ADMIN_PW,
    API,
    DEBUG_PAGE,
    EDIT,
    RESOURCE,
    Site,
    client_for,
    site,  # noqa: F401 - the fixture
)

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
PATHS = ["/rest/api/2/myself", "/plugins/servlet/oauth/request-token",
         "/plugins/servlet/oauth/access-token", "/oauth/token", "/oauth/initiate"]
OAUTH_NAMES = ["oauth_consumer_key", "oauth_token", "oauth_signature_method",
               "oauth_signature", "oauth_timestamp", "oauth_nonce", "oauth_version",
               "oauth_verifier", "oauth_session_handle", "oauth_callback",
               "xoauth_requestor_id", "realm", "x"]
METHODS = ["HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1", "PLAINTEXT", "", "hmac-sha1", "NONE"]
# Printable-ish text with the characters parsers trip over.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60) | \
    st.sampled_from(["", "%", "%zz", "a b", '"', "\\", ",", "=", "+", "%00", "\x7f", "é",
                     "9" * 16, "1700000000"])


@st.composite
def oauth_header(draw: st.DrawFn) -> str:
    """An Authorization header that names the registered consumer ``app``: mostly
    well-formed with odd values (so that the request gets past the parser to the checks
    and into the history), sometimes anything (parameters repeated, unescaped, badly
    quoted)."""
    hostile = draw(st.integers(0, 4)) == 0
    pairs = [("oauth_consumer_key", "app")]
    plausible = {
        "oauth_signature_method": st.sampled_from(METHODS),
        "oauth_signature": st.text("abcdefXYZ0123456789+/=", min_size=1, max_size=30) | TEXT,
        "oauth_timestamp": st.integers(1_600_000_000, 1_900_000_000).map(str),
        "oauth_nonce": st.text("abcdefghij0123456789", min_size=1, max_size=20),
    }
    for name, values in plausible.items():
        if not hostile or draw(st.booleans()):
            pairs.append((name, draw(values if not hostile else values | TEXT)))
    extra = OAUTH_NAMES if hostile else [n for n in OAUTH_NAMES if n not in plausible
                                         and n != "oauth_consumer_key"]
    for name in draw(st.lists(st.sampled_from(extra), max_size=4, unique=not hostile)):
        pairs.append((name, draw(TEXT)))
    pairs = draw(st.permutations(pairs))
    quoted = not hostile or draw(st.booleans())
    parts = [f'{n}="{quote(v, safe="~") if quoted else v}"' for n, v in pairs]
    return "OAuth " + draw(st.sampled_from([", ", ",", " , "])).join(parts)


QUERY = st.lists(st.tuples(st.text("abcxyz_", min_size=1, max_size=8), TEXT),
                 max_size=3).map(lambda ps: "&".join(f"{n}={quote(v, safe='')}"
                                                     for n, v in ps)) | TEXT


def check_history(s: Site) -> None:
    raws = s.deps.redis.lrange(s.deps.layout.failure_history("app"), 0, -1)
    text = json.dumps([r.decode() for r in raws])
    for raw in raws:
        assert len(raw) <= ENTRY_LIMIT
        assert isinstance(json.loads(raw), dict)
    for secret in s.secrets:
        assert secret not in text


def test_hostile_signed_requests_never_5xx_and_are_recorded_safely(site: Site) -> None:  # noqa: F811
    @FUZZ
    @given(path=st.sampled_from(PATHS), method=st.sampled_from(["GET", "POST"]),
           header=oauth_header(), query=QUERY, body=QUERY,
           content_type=st.sampled_from([None, "application/x-www-form-urlencoded",
                                         "application/json", "text/plain; charset=x"]))
    def run(path: str, method: str, header: str, query: str, body: str,
            content_type: str | None) -> None:
        headers = {"Authorization": header}
        if content_type:
            headers["Content-Type"] = content_type
        resp = site.client.simulate_request(method, path, headers=headers,
                                            query_string=quote(query, safe="=&%+"),
                                            body=body.encode("utf-8"))
        assert resp.status_code < 500, (path, header, resp.text)

    run()
    fuzzed = failure_history(site.deps).consumer_report("app")["total"]
    assert fuzzed > 0  # the hostile requests reached the history, not just the parser
    # A real client's refusal with every secret a request can carry, then the checks.
    _, headers, _ = client_for(site, resource_owner_secret="wrong").sign(RESOURCE)
    assert site.client.simulate_get("/rest/api/2/myself", headers=headers).status_code == 401
    check_history(site)
    report = failure_history(site.deps).consumer_report("app")
    assert report["total"] >= 1
    # Every kept refusal can be handed to the debugger without a 5xx.
    for entry in report["failures"][:25]:
        resp = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN,
                                         json={"requestId": entry["requestId"],
                                               "consumerKey": "app"})
        assert resp.status_code == 200, (entry, resp.text)
        for secret in site.secrets:
            assert secret not in resp.text


def test_hostile_reads_never_5xx(site: Site) -> None:  # noqa: F811
    root = Browser(site.client, "root", ADMIN_PW)

    @FUZZ
    @given(key=TEXT, limit=TEXT, request_id=TEXT | st.integers() | st.none(),
           consumer=TEXT | st.integers() | st.none())
    def run(key: str, limit: str, request_id: object, consumer: object) -> None:
        path = f"{API}/consumer-failures/{quote(key, safe='')}"
        resp = site.client.simulate_get(path, params={"limit": limit}, headers=ADMIN)
        assert resp.status_code < 500, (key, limit, resp.text)
        body: dict[str, object] = {"requestId": request_id}
        if consumer is not None:
            body["consumerKey"] = consumer
        resp = site.client.simulate_post(f"{API}/debug/signature", headers=ADMIN, json=body)
        assert resp.status_code in (200, 404, 422), (body, resp.text)
        page = root.get(DEBUG_PAGE, requestId=str(request_id), consumer=str(consumer or ""))
        assert page.status_code in (200, 404, 422), (request_id, consumer)
        page = root.get(EDIT, key=key)
        assert page.status_code in (200, 404), key

    run()


@pytest.mark.parametrize("limit", ["1", "200"])
def test_any_limit_in_range_is_served(site: Site, limit: str) -> None:  # noqa: F811
    without = Client("app", client_secret="wrong", resource_owner_key=site.grant.token)
    _, headers, _ = without.sign(RESOURCE)
    site.client.simulate_get("/rest/api/2/myself", headers=headers)
    resp = site.client.simulate_get(f"{API}/consumer-failures/app", params={"limit": limit},
                                    headers=ADMIN)
    assert resp.status_code == 200 and len(resp.json["failures"]) == 1


def test_the_page_survives_redis_being_down(tmp_path: Path) -> None:
    """Operational data: with Redis unreachable, the consumer's page renders its failure
    section saying so (the rest of the page reads the store), and the JSON API answers
    503, never 500."""
    import falcon.testing
    import redis

    from oauthledger.events.keys import KeyLayout
    from oauthledger.services.deps import Deps
    from oauthledger.services.http.app import create_app
    from oauthledger.services.http.pages.consumers import failures_view
    from oauthledger.services.http.rendering import make_templates
    from tests.conftest import embedded_deps_in
    from tests.integration.test_failure_history import make_site

    with embedded_deps_in(tmp_path) as deps:
        make_site(deps)
        down = Deps(settings=deps.settings, store=deps.store,
                    redis=redis.Redis.from_url("redis://127.0.0.1:1/0",
                                               socket_connect_timeout=1),
                    sealer=deps.sealer, wake=lambda: None, layout=KeyLayout("oldown"))
        view = failures_view(down, "app")
        html = make_templates().get_template("admin_consumer_failures.html").render(
            failures=view)
        assert 'id="failures-unavailable"' in html and "Redis cannot be reached" in html
        resp = falcon.testing.TestClient(create_app(down)).simulate_get(
            f"{API}/consumer-failures/app", headers=ADMIN)
        assert resp.status_code == 503, resp.text
        assert resp.headers["Content-Type"] == "application/problem+json"
