"""Hostile requests against every route of the real app, on the embedded SQLite store and
on PostgreSQL with the real Redis (the ``site`` fixture): no input may produce a 5xx
(docs/design.md, "Errors that say why"). A failure names the request as a
``simulate_request`` call and shows the server's traceback.

Reproducible in CI: every test runs with ``derandomize=True`` and no example database,
so each run makes the same draws in the same order against a site seeded the same way
(only nonces, timestamps and fresh names differ) — a failure in CI fails again on a
laptop, and a pass is not luck of the draw. The budget (``max_examples`` per test, the
whole tier well under 90 s on two cores) and how to run longer or replay one request
are in docs/testing.md, "The fuzz tier".
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SIGNATURE_PLAINTEXT,
    SIGNATURE_TYPE_AUTH_HEADER,
    SIGNATURE_TYPE_BODY,
    SIGNATURE_TYPE_QUERY,
    Client,
)

from tests.fuzz import strategies as s
from tests.fuzz.conftest import (
    ADMIN,
    ADMIN_PW,
    CONSUMER_SECRET,
    POOL,
    TRUSTED,
    UNTRUSTED,
    USER,
    USER_PW,
    Request,
    Site,
    cookie_header,
    examples,
)

NONCES = itertools.count()
HOST = "falconframework.org"  # falcon.testing's default Host
API = "/rest/oauthledger/1"
FORM = "application/x-www-form-urlencoded"
DANCE_PATHS = {
    "request": ["/plugins/servlet/oauth/request-token", "/oauth/initiate"],
    "access": ["/plugins/servlet/oauth/access-token", "/oauth/token"],
    "resource": ["/rest/api/2/myself"],
}


def fuzz_settings(max_examples: int) -> settings:
    """The tier's Hypothesis settings: a fixed number of examples, no deadline (a request
    on a loaded CI machine may take a while; time is not what is tested), derandomized
    with no example database so CI runs are reproducible (module docstring).
    OAUTHLEDGER_FUZZ_EXPLORE=1 draws at random instead, for a local hunt beyond the CI
    sequence (replay its finds with ``--hypothesis-seed``)."""
    explore = os.environ.get("OAUTHLEDGER_FUZZ_EXPLORE") == "1"
    return settings(
        max_examples=examples(max_examples), deadline=None, derandomize=not explore,
        database=None, print_blob=explore,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much])


def basic(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value (surrogates kept as their UTF-8-style bytes)."""
    raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
    return "Basic " + base64.b64encode(raw).decode()


@st.composite
def authorization(draw: st.DrawFn, site: Site) -> str | None:
    """Any Authorization header: OAuth (well-formed or not), Basic with seeded or hostile
    credentials, or junk."""
    kind = draw(st.sampled_from(["none", "oauth", "oauth", "basic", "junk"]))
    if kind == "none":
        return None
    if kind == "oauth":
        return draw(s.authorization_header(draw(s.oauth_params(site.ids))))
    if kind == "basic":
        user, password = draw(st.sampled_from([
            (ADMIN, ADMIN_PW), (USER, USER_PW), ("rs", site.rs_secret), (ADMIN, "wrong")]))
        user = draw(st.one_of(st.just(user), s.identifier([user])))
        header = basic(user, draw(st.one_of(st.just(password), s.hostile_text())))
        return draw(st.sampled_from([header, header.lower(), header + "=", "Basic !!",
                                     "Basic " + base64.b64encode(b"\xff:x").decode()]))
    return draw(s.header_text())


@st.composite
def headers(draw: st.DrawFn, site: Site) -> dict[str, str]:
    """Hostile request headers: Authorization, Content-Type, Cookie, Host, X-Forwarded-*,
    Forwarded, X-Request-Id, X-CSRF-Token."""
    out: dict[str, str] = {}
    auth = draw(authorization(site))
    if auth is not None:
        out["Authorization"] = auth
    if draw(st.booleans()):
        out["Content-Type"] = draw(st.one_of(st.sampled_from(s.CONTENT_TYPES),
                                             s.header_text()))
    cookie = draw(st.sampled_from(["admin", "user", None, "junk"]))
    if cookie == "junk":
        out["Cookie"] = draw(st.one_of(
            s.header_text(), st.builds(lambda v: f"oauthledger_session={v}", s.header_text()),
            st.just(f"oauthledger_session={site.cookies['admin']}; oauthledger_session=x")))
    elif cookie is not None:
        out.update(cookie_header(site, cookie))
    if cookie in ("admin", "user") and draw(st.booleans()):
        out["X-CSRF-Token"] = draw(st.one_of(st.just(site.csrf[cookie]), s.header_text()))
    for name in draw(st.lists(st.sampled_from([
            "Host", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port",
            "X-Forwarded-Prefix", "X-Forwarded-For", "Forwarded", "X-Request-Id"]),
            max_size=4, unique=True)):
        out[name] = draw(st.one_of(
            s.header_text(),
            st.sampled_from(["https", "http", "ftp", "443", "99999", "-1", "a.test:8443",
                             "[::1]:80", "[::1", "/jira", "//evil.test", "for=1.2.3.4;"
                             "proto=https;host=x.test", 'for="[::1]:80"', "1.2.3.4, 5.6.7.8",
                             "host=", "proto=gopher"])))
    return out


@st.composite
def body_for(draw: st.DrawFn, site: Site, ids: dict[str, list[str]]) -> bytes:
    """A body, whatever the Content-Type says: a form, JSON, raw bytes, or something far
    past the 64 KiB cap."""
    kind = draw(st.sampled_from(["none", "form", "form", "json", "bytes", "huge"]))
    if kind == "none":
        return b""
    if kind == "form":
        pairs = draw(s.form_pairs(s.FIELDS + s.OAUTH_NAMES, sum(ids.values(), [])))
        if draw(st.booleans()):
            pairs.append(("csrf_token", draw(st.sampled_from(list(site.csrf.values())))))
        return draw(s.encoded_pairs(pairs)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return draw(s.json_body(sum(ids.values(), [])))
    if kind == "huge":
        return b"a=" + b"x" * draw(st.sampled_from([65_535, 65_537, 200_000]))
    return draw(st.binary(max_size=64))


def ids_for(site: Site, method: str) -> dict[str, list[str]]:
    """The seeded identifiers a request with ``method`` may name: a change never
    targets the consumers and tokens the signed requests use (removing ``app`` would
    keep every later signed request from getting deep); ``other`` is there to change."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return site.ids
    return {**site.ids, "consumer": ["other"], "access_token": []}


@st.composite
def any_request(draw: st.DrawFn, site: Site) -> Request:
    """Any route (or none), any method, hostile query, headers and body."""
    template, methods = (None, ()) if draw(st.integers(0, 9)) == 0 else \
        draw(st.sampled_from(site.routes))
    # Mostly a method the route serves, else any (405, or a method no route knows).
    method = draw(st.sampled_from(methods)) if methods and draw(st.integers(0, 3)) else \
        draw(st.sampled_from(s.HTTP_METHODS))
    ids = ids_for(site, method)
    path = ("/" + s.percent(draw(s.hostile_text())).replace("%2F", "/") if template is None
            else s.path_of(template, draw, ids))
    query_pairs = draw(s.form_pairs(s.FIELDS + s.OAUTH_NAMES, sum(ids.values(), [])))
    query = s.query_text(draw(s.encoded_pairs(query_pairs))) if query_pairs else ""
    hdrs = draw(headers(site))
    return Request(method, path, query, hdrs, draw(body_for(site, ids)),
                   draw(st.sampled_from([TRUSTED, UNTRUSTED])))


@given(data=st.data())
@fuzz_settings(max_examples=400)
def test_any_request_to_any_route(site: Site, data: st.DataObject) -> None:
    site.send(data.draw(any_request(site), label="request"))


# -- signed requests: get past the parser to the consumer, token, signature and nonce -------


# What one signed request gets wrong, at most one thing each, so most requests pass every
# check before the faulty one and reach the work behind it ("none": a valid request).
FAULTS = ["none", "none", "none", "consumer", "token", "secret", "token_secret",
          "timestamp", "nonce", "verifier", "handle", "method", "realm", "requestor",
          "tamper_header", "tamper_query", "tamper_body", "get"]


@st.composite
def signed_request(draw: st.DrawFn, site: Site) -> Request:
    """A request signed by oauthlib for one of the dance endpoints or the protected
    resource, with the parameters in the header, the query or a form body: valid, or
    wrong in one respect (a hostile consumer key or token, a wrong secret or verifier,
    a stale timestamp, a reused nonce, a tampered header, query or body, ...)."""
    step = draw(st.sampled_from(["request", "access", "renew", "resource", "resource"]))
    fault = draw(st.sampled_from(FAULTS))
    path = draw(st.sampled_from(DANCE_PATHS["access" if step == "renew" else step]))
    method = "GET" if step == "resource" or fault == "get" else "POST"
    consumer = "app"
    token: str | None = None
    verifier: str | None = None
    extra: list[tuple[str, str]] = []
    # Tokens by slot (site.refresh_tokens keeps each pool full): what a draw may choose
    # never depends on which tokens earlier requests used up, so a run replays exactly.
    slot = draw(st.integers(0, POOL - 1))
    if step == "access":
        token = site.approved[slot]
        verifier = site.verifiers[token]
    elif step == "renew":
        token = site.access[slot]
        extra.append(("oauth_session_handle", site.handles[token]))
    elif step == "resource":
        if draw(st.integers(0, 3)):
            token = site.access[slot]
        else:
            consumer = "app2lo"  # two-legged, acting as its configured user
    if fault == "consumer":
        consumer = draw(s.identifier(site.ids["consumer"]))
    elif fault == "token":
        token = draw(s.identifier(site.ids["request_token"] + site.ids["access_token"]))
    elif fault == "verifier":
        verifier = draw(s.hostile_text())
    elif fault == "handle":
        extra = [("oauth_session_handle", draw(s.hostile_text()))]
    elif fault == "requestor":
        extra.append(("xoauth_requestor_id", draw(s.identifier(site.ids["user"]))))
    form = method == "POST" and draw(st.booleans())
    client = Client(
        consumer,
        client_secret=draw(s.hostile_text()) if fault == "secret" else CONSUMER_SECRET,
        resource_owner_key=token,
        resource_owner_secret=("x" if fault == "token_secret"
                               else site.secrets.get(token or "", "")),
        verifier=verifier,
        callback_uri=(draw(st.sampled_from(["oob", "http://client.test/cb", "http://x.test/"]))
                      if step == "request" else None),
        signature_method=draw(st.sampled_from(
            [SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, SIGNATURE_PLAINTEXT]
            if fault == "method" else [SIGNATURE_HMAC_SHA1])),
        signature_type=draw(st.sampled_from(
            [SIGNATURE_TYPE_AUTH_HEADER, SIGNATURE_TYPE_QUERY]
            + ([SIGNATURE_TYPE_BODY] if form else []))),
        # A fresh nonce, so valid requests get past the replay check to the work.
        nonce=(draw(st.sampled_from(["n0", "n1"])) if fault == "nonce"
               else f"n{next(NONCES)}x"),
        timestamp=str(int(time.time()) + (draw(st.sampled_from([-900, 900, 10**9]))
                                          if fault == "timestamp" else 0)),
        realm=draw(st.sampled_from(['a "b"', "x,y", ""])) if fault == "realm" else None)
    encoded = "&".join(f"{s.percent(n)}={s.percent(v)}" for n, v in extra)
    body = encoded if form else None
    url = f"http://{HOST}{path}" + ("" if form or not extra else "?" + encoded)
    try:
        uri, hdrs, signed_body = client.sign(
            url, http_method=method, body=body,
            headers={"Content-Type": FORM} if form else None)
    except ValueError:
        # oauthlib refuses to sign some hostile values; send them unsigned instead.
        uri, hdrs, signed_body = url, {"Content-Type": FORM} if form else {}, body
    target, _, query = uri.split(HOST, 1)[1].partition("?")
    raw_body = (signed_body or "").encode("utf-8", "surrogatepass")
    hdrs = {k: s.as_header_value(v) for k, v in hdrs.items()}
    if fault == "tamper_header" and "Authorization" in hdrs:
        # A position by fraction: the header's length varies with the nonce and time.
        at = draw(st.integers(0, 100)) * len(hdrs["Authorization"]) // 100
        hdrs["Authorization"] = s.as_header_value(
            hdrs["Authorization"][:at] + draw(s.hostile_text(4)) + hdrs["Authorization"][at:])
    elif fault == "tamper_query":
        query += "&" + s.query_text(draw(s.encoded_pairs(draw(s.form_pairs(
            s.OAUTH_NAMES, sum(site.ids.values(), []))))))
    elif fault == "tamper_body":
        raw_body += b"&" + draw(s.encoded_pairs(draw(s.form_pairs(
            s.OAUTH_NAMES, [])))).encode("utf-8", "surrogatepass")
    return Request(method, target, query, hdrs, raw_body, TRUSTED)


@given(data=st.data())
@fuzz_settings(max_examples=300)
def test_signed_requests_to_the_dance_and_resources(site: Site, data: st.DataObject) -> None:
    site.refresh_tokens()
    site.send(data.draw(signed_request(site), label="request"))


@given(data=st.data())
@fuzz_settings(max_examples=150)
def test_verify_api_with_submitted_requests(site: Site, data: st.DataObject) -> None:
    """The verify API: the resource server's credentials (right, wrong, hostile) and a
    submitted request that is a signed one or any JSON at all."""
    site.refresh_tokens()
    if data.draw(st.booleans(), label="signed"):
        inner = data.draw(signed_request(site), label="submitted")
        payload: object = {
            "method": inner.method,
            "url": f"http://{HOST}{inner.path}" + (f"?{inner.query}" if inner.query else ""),
            "headers": {**inner.headers, "Content-Type": FORM} if inner.body else inner.headers,
            "body": inner.body.decode("utf-8", "surrogatepass"),
        }
        if data.draw(st.booleans(), label="mangle"):
            key = data.draw(st.sampled_from(["method", "url", "headers", "body"]))
            payload[key] = data.draw(s.json_values(), label="value")  # type: ignore[index]
        body = json.dumps(payload).encode("utf-8", "surrogatepass")
    else:
        body = data.draw(s.json_body([]), label="body")
    auth = data.draw(st.one_of(st.just(basic("rs", site.rs_secret)),
                               st.builds(basic, s.identifier(["rs"]), s.hostile_text()),
                               s.header_text()), label="authorization")
    site.send(Request("POST", f"{API}/verify", "", {
        "Authorization": auth, "Content-Type": "application/json"}, body, TRUSTED))


# -- the admin JSON API and the pages, signed in -----------------------------------------


def valid_body(template: str, method: str) -> dict[str, object] | None:
    """A body the route accepts (a fresh name where one must be new), or None where no
    body is read: the start of a request that is valid but for one field."""
    n = next(NONCES)
    if template == f"{API}/consumers" and method == "POST":
        return {"key": f"fz{n}", "name": "Fuzz", "sharedSecret": "fuzz-secret-1",
                "signatureMethods": ["HMAC-SHA1"], "callbackUrl": "https://c.test/"}
    if template.startswith(f"{API}/consumers/") and method in ("PATCH", "PUT"):
        return {"name": "Fuzz", "description": "d", "threeLegged": True}
    if template.startswith(f"{API}/consumer-secrets/"):
        return {"sharedSecret": "fuzz-secret-2"}
    if template == f"{API}/service-providers" and method == "POST":
        return {"name": f"sp{n}", "consumerKey": "ck", "sharedSecret": "s",
                "requestTokenUrl": "https://sp.test/r", "authorizeUrl": "https://sp.test/a",
                "accessTokenUrl": "https://sp.test/t", "description": "d"}
    if template == f"{API}/consumer-info" and method == "PATCH":
        return {"name": "Fuzz", "description": "d"}
    return None


@st.composite
def api_body(draw: st.DrawFn, template: str, method: str, ids: dict[str, list[str]]
             ) -> bytes:
    """Mostly a valid body with one field made hostile (any JSON value, text with NUL,
    an unpaired surrogate, ...), else any body at all."""
    base = valid_body(template, method)
    if base is None or not draw(st.integers(0, 3)):
        return draw(s.json_body(sum(ids.values(), [])))
    base[draw(st.sampled_from(sorted(base)))] = draw(s.bad_value())
    return json.dumps(base).encode("utf-8", "surrogatepass")


@st.composite
def api_request(draw: st.DrawFn, site: Site) -> Request:
    """A JSON API call as the admin (session with its anti-CSRF token, or Basic) or the
    user, to any API route with a JSON body of the API's fields (changes name only what
    :func:`ids_for` allows)."""
    # Every (route, method) pair of the API, so changes are drawn as often as reads.
    pairs = [(t, m) for t, ms in site.routes if t.startswith(API + "/") for m in ms]
    template, method = draw(st.sampled_from(pairs))
    ids = ids_for(site, method)
    path = s.path_of(template, draw, ids)
    # Mostly the admin, so requests get past the access check to the work.
    who = draw(st.sampled_from(["admin-session"] * 4 + ["admin-basic", "user-session", "none"]))
    hdrs = {"Content-Type": draw(st.sampled_from(["application/json"] * 5
                                                  + ["application/json; charset=utf-8",
                                                     "text/plain", FORM]))}
    if who.endswith("session"):
        role = who.split("-")[0]
        hdrs.update(cookie_header(site, role))
        hdrs["X-CSRF-Token"] = site.csrf[role]
    elif who == "admin-basic":
        hdrs["Authorization"] = basic(ADMIN, ADMIN_PW)
    query_pairs = draw(s.form_pairs(["user", "consumer", "status", "include", "baseUrl"],
                                    sum(ids.values(), [])))
    query = s.query_text(draw(s.encoded_pairs(query_pairs))) if query_pairs else ""
    body = draw(api_body(template, method, ids)) if method != "GET" else b""
    return Request(method, path, query, hdrs, body, TRUSTED)


@given(data=st.data())
@fuzz_settings(max_examples=250)
def test_admin_json_api_signed_in(site: Site, data: st.DataObject) -> None:
    site.send(data.draw(api_request(site), label="request"))


ADMIN_PAGES = "/plugins/servlet/oauth/admin"


def valid_form(template: str) -> list[tuple[str, str]]:
    """Form fields an admin page's POST accepts (a fresh name where one must be new):
    the start of a post that is valid but for one field."""
    n = next(NONCES)
    if template in (f"{ADMIN_PAGES}/consumers/add", f"{ADMIN_PAGES}/consumers/edit"):
        return [("key", f"fz{n}" if template.endswith("add") else "other"),
                ("name", "Fuzz"), ("secret", "fuzz-secret-1"),
                ("signature_methods", "HMAC-SHA1"), ("callback_url", "https://c.test/")]
    if template == f"{ADMIN_PAGES}/service-providers":
        return [("name", f"sp{n}"), ("consumer_key", "ck"), ("shared_secret", "s"),
                ("request_token_url", "https://sp.test/r"),
                ("authorize_url", "https://sp.test/a"),
                ("access_token_url", "https://sp.test/t")]
    if template == f"{ADMIN_PAGES}/consumer-info":
        return [("name", "Fuzz"), ("description", "d")]
    return []


@st.composite
def page_request(draw: st.DrawFn, site: Site) -> Request:
    """A page or form post under /plugins/servlet/..., /login, /logout or / as the
    admin, the user or nobody, with the session's anti-CSRF token in the form (or a
    wrong one) and the pages' field names."""
    routes = [(t, m) for t, m in site.routes if not t.startswith(("/rest/", "/static"))]
    template, methods = draw(st.sampled_from(routes))
    method = draw(st.sampled_from(methods or ("GET",)))
    who = draw(st.sampled_from(["admin", "admin", "admin", "user", None]))
    ids = ids_for(site, method)
    pairs = valid_form(template) if method == "POST" and draw(st.booleans()) else []
    if pairs:  # one field made hostile
        at = draw(st.integers(0, len(pairs) - 1))
        pairs[at] = (pairs[at][0], draw(st.one_of(st.sampled_from(s.UNSTORABLE),
                                                  s.hostile_text(), s.long_text())))
    else:
        pairs = draw(s.form_pairs(s.FIELDS, sum(ids.values(), [])))
    if who is not None:
        csrf = site.csrf[who] if draw(st.integers(0, 4)) else draw(s.hostile_text())
        pairs.append(("csrf_token", csrf))
    hdrs = cookie_header(site, who)
    query = ""
    body = b""
    if method == "POST":
        hdrs["Content-Type"] = draw(st.sampled_from([FORM, FORM, "text/plain"]))
        body = draw(s.encoded_pairs(pairs)).encode("utf-8", "surrogatepass")
    elif pairs:
        query = s.query_text(draw(s.encoded_pairs(pairs)))
    return Request(method, s.path_of(template, draw, ids), query, hdrs, body,
                   draw(st.sampled_from([TRUSTED, UNTRUSTED])))


@given(data=st.data())
@fuzz_settings(max_examples=250)
def test_pages_and_forms_signed_in(site: Site, data: st.DataObject) -> None:
    site.send(data.draw(page_request(site), label="request"))
