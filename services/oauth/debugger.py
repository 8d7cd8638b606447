"""The signature debugger: given a request as a client sent it, show what the server
computes and why the client's signature does not match (docs/oauth.md, "The dance
completes, then every call is a 401").

Framework independent. The caller hands in the request (method, URL, headers, body) and a
``load`` callable that returns the consumer's and the token's state with their secrets
already opened (:func:`store_loader` builds one over the event store and the sealer).
The report holds:

- the OAuth parameters and where each came from (header, query, body), parsed by the
  server's own :func:`~oauthledger.services.oauth.request.parse_request`;
- the URL the server uses, rebuilt by :func:`~oauthledger.services.oauth.urls.signed_url`
  exactly as the front end does (docs/oauth.md, "The URL that is signed");
- the normalized parameters and the base string, from
  :mod:`~oauthledger.services.oauth.signatures` (the one implementation of the base
  string);
- the verdict, from the server's own checks (``Authenticator.check_signed``: consumer,
  signature method, timestamp window, token, signature; the nonce is not part of it);
- a diagnosis: which secret combination or which single difference in the base string
  reproduces the client's signature.

Secrets stay out of the report: it names the combination that matches ("the consumer
secret only"), never a secret and never a signature computed with one (that would be an
oracle for guessing secrets). The client's own signature is shown, except for
PLAINTEXT, where the signature is the secrets themselves. Verifiers and session handles
are secrets too (docs/design.md, "Sealed secrets") and are masked wherever a parameter
value is shown.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from oauthledger.events.readmodel import ReadModel
from oauthledger.events.sealing import Sealer
from oauthledger.events.settings import Settings
from oauthledger.events.state import (
    ConsumerState,
    TokenState,
    consumer_stream,
    fold_stream,
    token_stream,
)
from oauthledger.events.store import EventStore
from oauthledger.services.errors import ValidationError
from oauthledger.services.oauth.authenticator import Authenticator
from oauthledger.services.oauth.problems import OAuthProblem, escape

# body_params: the server's own rule for which bodies are forms (docs/oauth.md, "Where
# parameters may come from"), so the debugger and the server never disagree.
from oauthledger.services.oauth.request import (
    PLAINTEXT,
    SignedRequest,
    body_params,
    parse_authorization,
    parse_form,
    parse_request,
)
from oauthledger.services.oauth.signatures import (
    HMAC_METHODS,
    METHODS,
    RSA_METHODS,
    base_string,
    load_public_key,
    needs_secret,
    normalize_parameters,
    verify,
)

# RFC 7239 Forwarded pairs, read as the URL rebuilder reads them.
from oauthledger.services.oauth.urls import forwarded_pairs, is_trusted, signed_url

VALID = "valid"
INVALID = "invalid"
CANNOT_TELL = "cannot_tell"

# Parameter values that are secrets (docs/design.md, "Sealed secrets"): masked wherever
# the report shows a value, the base string included.
HIDDEN_PARAMETERS = ("oauth_verifier", "oauth_session_handle")
MASK = "(hidden)"

_FORM = "application/x-www-form-urlencoded"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 §5.1 field names and §9.1 methods are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_BODY = 64 * 1024
MAX_URL = 8192
MAX_HEADERS = 100
MAX_HEADER_VALUE = 8192
# Bounds on the search, so a request with hundreds of parameters stays cheap.
_MAX_PARAM_VARIANTS = 40
_MAX_RANK = 3
# Parameter encodings the search may spend (each try normalizes every parameter anew):
# a few seconds at most for a 64 KiB form, thousands of tries for an ordinary request.
_BUDGET = 500_000
# Endpoints whose token rules differ from a protected resource's (docs/oauth.md,
# "Endpoints"); matched at the end of the path, so a base-URL prefix does not matter.
_REQUEST_TOKEN_PATHS = ("/plugins/servlet/oauth/request-token", "/oauth/initiate")
_ACCESS_TOKEN_PATHS = ("/plugins/servlet/oauth/access-token", "/oauth/token")


# -- input -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DebugRequest:
    """A request as the client sent it. ``headers`` has lower-case names (as the front
    end hands them to the parser); ``remote_addr`` is the address it came from, when
    known (forwarding headers are believed only from a trusted proxy)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    remote_addr: str | None = None

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, or None."""
        return self.headers.get("content-type")


def _text(name: str, value: object, errors: dict[str, str], *, limit: int,
          required: bool = True) -> str:
    if value is None:
        if required:
            errors[name] = "is required"
        return ""
    if not isinstance(value, str):
        errors[name] = "must be a string"
        return ""
    if required and not value.strip():
        errors[name] = "is required"
    elif _SURROGATE.search(value):
        errors[name] = "holds an unpaired surrogate, which is not text; send UTF-8"
    elif len(value.encode("utf-8")) > limit:
        errors[name] = f"is longer than {limit} bytes"
    return value


def header_lines(text: str) -> list[tuple[str, str]]:
    """``Name: value`` lines (as pasted from a log or typed into the page) as pairs;
    blank lines are skipped. Raises :class:`ValidationError` on ``headers`` naming the
    first line that is not ``Name: value``."""
    out: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name.strip()):
            raise ValidationError({"headers": f"line {number} is not 'Name: value'"})
        out.append((name.strip(), value.strip()))
    return out


def debug_request(method: object, url: object, headers: object, body: object,
                  remote_addr: object = None) -> DebugRequest:
    """Check the input of the debugger (JSON values, form fields or options) and build
    the request. ``headers`` is a mapping or a sequence of (name, value) pairs; a name
    given twice is joined with ", " as an HTTP server joins repeated fields (RFC 9110
    §5.3). Raises :class:`ValidationError` naming each bad field."""
    errors: dict[str, str] = {}
    m = _text("method", method, errors, limit=32)
    if "method" not in errors and not _TOKEN.fullmatch(m.strip()):
        errors["method"] = "must be an HTTP method such as GET or POST"
    u = _text("url", url, errors, limit=MAX_URL).strip()
    if "url" not in errors:
        problem = _url_problem(u)
        if problem:
            errors["url"] = problem
    merged: dict[str, str] = {}
    pairs: Iterable[Any]
    if headers is None:
        pairs = ()
    elif isinstance(headers, Mapping):
        pairs = headers.items()
    elif isinstance(headers, list | tuple):
        pairs = headers
    else:
        errors["headers"] = "must be an object of header names and values"
        pairs = ()
    count = 0
    for pair in pairs:
        count += 1
        if not (isinstance(pair, list | tuple) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
            errors["headers"] = "each header needs a name and a string value"
            break
        name, value = pair[0].strip(), pair[1].strip()
        if not _TOKEN.fullmatch(name):
            errors["headers"] = f"{name!r} is not a header name"
            break
        if _CONTROL.search(value) or _SURROGATE.search(value) \
                or len(value) > MAX_HEADER_VALUE:
            errors["headers"] = (f"the value of {name} holds a line break, a control "
                                 f"character or a surrogate, or is over {MAX_HEADER_VALUE} "
                                 "characters")
            break
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    if count > MAX_HEADERS:
        errors["headers"] = f"at most {MAX_HEADERS} headers"
    b = _text("body", body, errors, limit=MAX_BODY, required=False)
    addr: str | None = None
    if remote_addr not in (None, ""):
        if not isinstance(remote_addr, str):
            errors["remoteAddr"] = "must be a string"
        else:
            try:
                addr = str(ipaddress.ip_address(remote_addr.strip()))
            except ValueError:
                errors["remoteAddr"] = "must be an IPv4 or IPv6 address"
    if errors:
        raise ValidationError(errors)
    return DebugRequest(method=m.strip().upper(), url=u, headers=merged,
                        body=b.encode("utf-8"), remote_addr=addr)


def _url_problem(url: str) -> str | None:
    if _CONTROL.search(url):
        return "holds a control character or a line break"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"cannot be read: {exc}"
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return "must be an absolute http:// or https:// URL, as the client sent it"
    return None


# -- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the server knows about the request's consumer and token, secrets opened.

    ``related_token_secrets`` are (code, secret) pairs of tokens a client may sign with
    by mistake: ``request_token_secret`` (the request token an access token was
    exchanged for) and ``renewed_from_secret`` (the access token it replaced)."""

    consumer: ConsumerState | None = None
    consumer_secret: str | None = None
    token: TokenState | None = None
    token_secret: str | None = None
    related_token_secrets: tuple[tuple[str, str], ...] = ()


Loader = Callable[[str, str | None], Credentials]


def store_loader(store: EventStore, sealer: Sealer) -> Loader:
    """A ``load`` for :func:`debug_signature`: the consumer and token folded from the
    event store (strongly consistent, like the dance endpoints; docs/design.md, "What
    Redis holds"), their secrets opened with ``sealer``."""

    def load(consumer_key: str, token: str | None) -> Credentials:
        streams = [consumer_stream(consumer_key)]
        if token:
            streams.append(token_stream(token))
        recs = store.read_streams(streams)
        consumer = fold_stream(recs[streams[0]])
        tok = fold_stream(recs[streams[1]]) if token else None
        c = consumer if isinstance(consumer, ConsumerState) else None
        t = tok if isinstance(tok, TokenState) else None
        related: list[tuple[str, str]] = []
        if t is not None and t.kind == "access":
            names = [(code, other) for code, other in (
                ("request_token_secret", t.request_token),
                ("renewed_from_secret", t.renewed_from)) if other]
            if names:
                more = store.read_streams([token_stream(n) for _, n in names])
                for code, name in names:
                    state = fold_stream(more[token_stream(name)])
                    if isinstance(state, TokenState):
                        related.append((code, sealer.open(state.secret_sealed)))
        return Credentials(
            consumer=c,
            consumer_secret=sealer.open(c.secret_sealed) if c and c.secret_sealed else None,
            token=t,
            token_secret=sealer.open(t.secret_sealed) if t else None,
            related_token_secrets=tuple(related),
        )

    return load


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One sentence of the diagnosis: a stable ``code`` and a ``message`` for a person;
    ``details`` holds figures a program may want (seconds of skew, say)."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = dict(self.details)
        return out


@dataclass(frozen=True)
class Parameter:
    """One OAuth or request parameter: where it came from (``header``, ``query`` or
    ``body``) and whether it enters the base string."""

    name: str
    value: str
    source: str
    signed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "value": self.value, "source": self.source,
                "signed": self.signed}


@dataclass
class Report:
    """What the debugger found; :meth:`to_dict` is the JSON answer, :meth:`to_text` the
    CLI's."""

    verdict: str
    summary: str
    method: str
    url: str
    server_url: str | None = None
    base_string_uri: str | None = None
    endpoint: str | None = None
    parameters: list[Parameter] = field(default_factory=list)
    normalized_parameters: str | None = None
    base_string: str | None = None
    signature_method: str | None = None
    signature: str | None = None
    signature_matches: bool | None = None
    consumer: dict[str, Any] | None = None
    token: dict[str, Any] | None = None
    server_problem: dict[str, Any] | None = None
    diagnosis: list[Finding] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    # Set when the report was rebuilt from the failure history (debug_history_entry):
    # which refusal, and what the server answered then.
    history: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of the API and of ``--format json``."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "summary": self.summary,
            "request": {"method": self.method, "url": self.url,
                        "serverUrl": self.server_url, "baseStringUri": self.base_string_uri,
                        "endpoint": self.endpoint},
            "consumer": self.consumer,
            "token": self.token,
            "parameters": [p.to_dict() for p in self.parameters],
            "normalizedParameters": self.normalized_parameters,
            "baseString": self.base_string,
            "signature": {"method": self.signature_method, "value": self.signature,
                          "matches": self.signature_matches},
            "serverProblem": self.server_problem,
            "diagnosis": [f.to_dict() for f in self.diagnosis],
            "hidden": list(self.hidden),
        }
        if self.history is not None:
            out["history"] = dict(self.history)
        return out

    def to_text(self) -> str:
        """The report for a person (the CLI's default output)."""
        lines = [f"verdict: {self.verdict}", self.summary, ""]
        if self.history is not None:
            h = self.history
            lines.append(f"refused:        {h['time']} request {h['requestId']} "
                         f"({h['route']}): {h['oauthProblem']}")
        lines.append(f"request:        {self.method} {self.url}")
        if self.server_url is not None:
            lines.append(f"server URL:     {self.server_url}")
        if self.base_string_uri is not None:
            lines.append(f"base URI:       {self.base_string_uri}")
        if self.endpoint:
            lines.append(f"endpoint:       {self.endpoint}")
        if self.consumer is not None:
            c = self.consumer
            state = ("unknown" if not c["known"] else "removed" if c.get("removed") else
                     "registered for " + (", ".join(c.get("signatureMethods") or []) or "-"))
            lines.append(f"consumer:       {c['key']} ({state})")
        if self.token is not None:
            t = self.token
            state = (f"{t['kind']} token, {t['status']}" if t["known"] else "unknown")
            lines.append(f"token:          {t['token']} ({state})")
        if self.signature_method is not None:
            match = {True: "matches", False: "does not match", None: "not checked"}[
                self.signature_matches]
            lines.append(f"signature:      {self.signature_method} {self.signature} ({match})")
        if self.server_problem is not None:
            p = self.server_problem
            lines.append(f"server answer:  {p['status']} {p['oauthProblem']}")
        if self.parameters:
            lines += ["", "parameters:"]
            width = max(len(p.name) for p in self.parameters)
            for p in self.parameters:
                flag = "" if p.signed else "  (not signed)"
                lines.append(f"  {p.name.ljust(width)}  {p.source:<6}  {p.value}{flag}")
        if self.normalized_parameters is not None:
            lines += ["", "normalized parameters:", f"  {self.normalized_parameters}"]
        if self.base_string is not None:
            lines += ["", "base string:", f"  {self.base_string}"]
        if self.hidden:
            lines += ["", f"hidden values: {', '.join(self.hidden)} (secrets are never shown)"]
        if self.diagnosis:
            lines += ["", "diagnosis:"]
            lines += [f"  - [{f.code}] {f.message}" for f in self.diagnosis]
        return "\n".join(lines) + "\n"


# -- the debugger ------------------------------------------------------------------------


class _Opened:
    """Stands in for the :class:`Sealer` inside the server's own :class:`Authenticator`,
    handing out the secrets the caller opened, so the verdict comes from the very checks
    the front end runs."""

    def __init__(self, opened: dict[str, str]) -> None:
        self._opened = opened

    def open(self, sealed: str) -> str:
        """The opened secret for ``sealed`` (KeyError when the caller gave none)."""
        return self._opened[sealed]


def _authenticator(settings: Settings, creds: Credentials, now: float) -> Authenticator:
    opened: dict[str, str] = {}
    if creds.consumer is not None and creds.consumer.secret_sealed \
            and creds.consumer_secret is not None:
        opened[creds.consumer.secret_sealed] = creds.consumer_secret
    if creds.token is not None and creds.token_secret is not None:
        opened[creds.token.secret_sealed] = creds.token_secret
    # check_signed reads neither Redis nor the store (the caller loaded both).
    return Authenticator(read_model=cast(ReadModel, None), store=cast(EventStore, None),
                         sealer=cast(Sealer, _Opened(opened)), settings=settings,
                         clock=lambda: now)


def _problem_dict(problem: OAuthProblem) -> dict[str, Any]:
    return {"oauthProblem": problem.problem, "status": problem.status,
            "advice": problem.advice, "params": dict(problem.params)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _server_url(dreq: DebugRequest, settings: Settings) -> str:
    """What the front end's ``external_url`` computes for this request: the request's
    scheme, its Host header (else the URL's authority), path and query, through
    :func:`signed_url` with the installation's base URL and trusted proxies."""
    parts = urlsplit(dreq.url)
    return signed_url(
        base_url=settings.base_url, scheme=parts.scheme.lower(),
        host=dreq.headers.get("host") or parts.netloc, path=parts.path, query=parts.query,
        remote_addr=dreq.remote_addr, headers=dreq.headers,
        trusted_proxies=settings.trusted_proxies,
    )


def _endpoint(base_uri: str, req: SignedRequest) -> tuple[str, str | None, bool]:
    """(endpoint name, token kind the server checks, renewal) for the request's path,
    as services/http/dance.py and the protected resources decide."""
    path = urlsplit(base_uri).path.rstrip("/")
    if path.endswith(_REQUEST_TOKEN_PATHS):
        return "request-token", None, False
    if path.endswith(_ACCESS_TOKEN_PATHS):
        renewal = req.oauth.get("oauth_session_handle") is not None
        return "access-token", ("access" if renewal else "request"), renewal
    return "protected resource", "access", False


def mask_url(url: str, names: Sequence[str]) -> str:
    """``url`` with the query values of the parameters ``names`` replaced by
    :data:`MASK` (the rest of the URL as it was)."""
    head, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sign, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={MASK}" if eq and unquote_plus(name) in names else part)
    return f"{head}?{'&'.join(parts)}{hash_sign}{fragment}"


def masked_request(req: SignedRequest) -> SignedRequest:
    """``req`` with the values of secret parameters replaced by :data:`MASK`."""
    if not any(name in HIDDEN_PARAMETERS for name, _ in req.params):
        return req
    return dataclasses.replace(req, params=tuple(
        (n, MASK if n in HIDDEN_PARAMETERS else v) for n, v in req.params))


def _parameters(dreq: DebugRequest, server_url: str, req: SignedRequest) -> list[Parameter]:
    """Every parameter with its source, in the order the server reads them (header,
    query, body); an ``oauth_*`` parameter repeated with the same value counts once."""
    sources: list[tuple[str, list[tuple[str, str]]]] = []
    auth = dreq.headers.get("authorization")
    if auth:
        sources.append(("header", parse_authorization(auth) or []))
    query = server_url.partition("?")[2].partition("#")[0]
    if query:
        sources.append(("query", parse_form(query, "query string")))
    sources.append(("body", body_params(dreq.body, dreq.content_type)))
    out: list[Parameter] = []
    seen: set[str] = set()
    plaintext = req.signature_method == PLAINTEXT
    for source, pairs in sources:
        for name, value in pairs:
            shown = value
            if name in HIDDEN_PARAMETERS or (name == "oauth_signature" and plaintext):
                shown = MASK
            if not name.startswith("oauth_"):
                out.append(Parameter(name, shown, source, True))
                continue
            signed = name != "oauth_signature" and name not in seen
            seen.add(name)
            out.append(Parameter(name, shown, source, signed))
    return out


def _consumer_view(key: str, creds: Credentials) -> dict[str, Any]:
    c = creds.consumer
    if c is None:
        return {"key": key, "known": False}
    return {"key": key, "known": True, "name": c.name, "removed": c.removed,
            "signatureMethods": list(c.signature_methods)}


def _token_view(token: str, creds: Credentials) -> dict[str, Any]:
    t = creds.token
    if t is None:
        return {"token": token, "known": False}
    return {"token": token, "known": True, "kind": t.kind, "status": t.status,
            "consumerKey": t.consumer_key, "expiresAt": _iso(t.expires_at)}


def debug_signature(dreq: DebugRequest, load: Loader, settings: Settings,
                    now: float | None = None, *, withheld: Collection[str] = ()) -> Report:
    """Debug one signed request; see the module docstring. ``load`` is called once,
    with the consumer key and token the request names, when it names them. ``now``
    defaults to the current time (the timestamp window counts from it).

    ``withheld`` names what the request carries only as :data:`MASK` because its value
    was not kept (a request rebuilt from the failure history: verifiers, session
    handles, a PLAINTEXT ``oauth_signature``; ``"body"`` when the body is not the one
    sent). The debugger does not guess them: when the signature covers one, it is not
    checked again, and without the body the ``oauth_body_hash`` is not either."""
    now = time.time() if now is None else now
    # Until the method is known, the signature in a query string is masked too (a
    # PLAINTEXT signature is the secrets).
    masked = (*HIDDEN_PARAMETERS, "oauth_signature")
    report = Report(verdict=INVALID, summary="", method=dreq.method,
                    url=mask_url(dreq.url, masked))
    try:
        server_url = _server_url(dreq, settings)
    except (ValueError, UnicodeError) as exc:
        report.summary = f"The server cannot rebuild a URL from this request: {exc}."
        return report
    report.server_url = mask_url(server_url, masked)
    try:
        req = parse_request(dreq.method, server_url, dreq.headers, dreq.body,
                            dreq.content_type)
    except OAuthProblem as problem:
        # Malformed or incomplete: the server refuses it before any signature check.
        advice = (problem.advice or problem.problem).replace(server_url, report.server_url)
        report.server_problem = {**_problem_dict(problem), "advice": advice}
        report.summary = ("The server refuses this request before checking its signature: "
                          f"{problem.problem}: {advice}")
        report.diagnosis.append(Finding(problem.problem, advice))
        return report

    if req.signature_method != PLAINTEXT:
        masked = HIDDEN_PARAMETERS
        report.url = mask_url(dreq.url, masked)
        report.server_url = mask_url(server_url, masked)
    shown = masked_request(req)
    report.base_string_uri = req.base_uri
    report.parameters = _parameters(dreq, server_url, req)
    report.normalized_parameters = normalize_parameters(shown.params)
    report.base_string = base_string(shown)
    report.hidden = sorted({n for n, _ in req.params if n in HIDDEN_PARAMETERS})
    report.signature_method = req.signature_method
    report.signature = MASK if req.signature_method == PLAINTEXT else req.signature
    endpoint, kind, renewal = _endpoint(req.base_uri, req)
    report.endpoint = endpoint
    # What the signature covers but the caller does not know (see the docstring).
    blind = [n for n in dict.fromkeys(withheld) if n == "oauth_signature"
             or any(name == n for name, _ in req.params)]

    creds = load(req.consumer_key, req.token)
    report.consumer = _consumer_view(req.consumer_key, creds)
    if req.token:
        report.token = _token_view(req.token, creds)
    https = server_url.startswith("https://")
    consumer = creds.consumer

    # The server's verdict, from its own checks in its own order.
    server_problem: OAuthProblem | None = None
    if endpoint == "request-token" and req.token:
        server_problem = OAuthProblem("parameter_rejected", "a request-token request "
                                      "carries no oauth_token",
                                      oauth_parameters_rejected="oauth_token")
    else:
        try:
            _authenticator(settings, creds, now).check_signed(
                req, consumer, creds.token, https=https, token_kind=kind, renewal=renewal)
        except OAuthProblem as problem:
            server_problem = problem
        except KeyError:
            server_problem = None  # a secret the caller did not open: told below
    if blind and server_problem is not None and server_problem.problem == "signature_invalid":
        # Computed over a stand-in value, so it says nothing; every check before the
        # signature passed.
        server_problem = None
    if server_problem is not None:
        report.server_problem = _problem_dict(server_problem)

    findings: list[Finding] = []
    if consumer is None:
        findings.append(Finding("consumer_unknown", (
            f"No consumer with key {req.consumer_key!r} is registered here, so there is "
            "no secret or public key to check the signature with. Check the consumer key "
            "configured in the client.")))
        report.verdict = CANNOT_TELL
        report.summary = ("The debugger cannot tell whether the signature is right: the "
                          f"consumer {req.consumer_key!r} is unknown.")
        report.diagnosis = findings
        return report

    findings += _consumer_findings(req, consumer, creds, https, settings)
    findings += _timestamp_findings(req, now, settings.timestamp_window)
    findings += _token_findings(req, creds, settings, kind, renewal, https, now)
    if "body" not in withheld:
        findings += _body_hash_findings(req, dreq)

    expected_token_secret = creds.token_secret if (
        kind is not None and req.token and creds.token is not None
        and creds.token.consumer_key == consumer.key) else None
    # HMAC and PLAINTEXT need the token's secret; RSA signs with the consumer's key only.
    token_checkable = not (kind is not None and req.token and expected_token_secret is None)
    public_key = _public_key(consumer)
    method = req.signature_method
    checkable = (
        (needs_secret(method) and creds.consumer_secret is not None and token_checkable)
        or (method in RSA_METHODS and public_key is not None))
    matches: bool | None = None
    if checkable and not blind:
        matches = verify(req, consumer_secret=creds.consumer_secret,
                         token_secret=expected_token_secret, public_key=public_key)
    report.signature_matches = matches

    explanations: list[tuple[Finding, ...]] = []
    unexplained: Finding | None = None
    if not matches and not blind:
        explanations, stopped = _explain(dreq, settings, server_url, req, creds,
                                         expected_token_secret, public_key, token_checkable)
        for found in explanations:
            findings += [f for f in found if f not in findings]
        if not explanations and stopped:
            unexplained = Finding("search_incomplete", (
                f"The request is large ({len(req.params)} parameters): the debugger stopped "
                "before it had tried every difference it knows, and none of those it tried "
                "reproduces the client's signature."))
        elif not explanations and checkable:
            unexplained = _no_match(method)
        if unexplained is not None:
            findings.append(unexplained)
    report.diagnosis = findings

    if server_problem is None and matches:
        report.verdict = VALID
        report.summary = ("The signature is valid, and the server's checks (consumer, "
                          "signature method, timestamp, token) pass; the nonce is not "
                          "checked here.")
    elif matches is None:
        report.verdict = CANNOT_TELL
        reason = (
            "the failure history does not keep the value of " + ", ".join(blind)
            + " (a secret), so the signature cannot be checked again"
            if blind else _why_unchecked(req, consumer, creds, kind, public_key))
        report.summary = f"The debugger cannot tell whether the signature is right: {reason}."
        if len(explanations) == 1:
            report.summary += " " + " ".join(f.message for f in explanations[0])
    elif matches:
        assert server_problem is not None
        report.verdict = INVALID
        report.summary = (f"The signature matches, but the server refuses the request with "
                          f"{server_problem.problem}: {server_problem.advice}")
    else:
        report.verdict = INVALID
        if len(explanations) == 1:
            told = " ".join(f.message for f in explanations[0])
        elif explanations:
            told = "More than one explanation fits; see the diagnosis."
        else:
            told = (unexplained or _no_match(method)).message
        report.summary = "The signature does not match. " + told
    return report


# -- the failure history ----------------------------------------------------------------

# Headers the URL rebuilder and the parameter reader look at (docs/oauth.md, "The URL
# that is signed"); the history keeps these and a rebuilt Authorization header, nothing
# else (no cookie, no Basic credentials).
HISTORY_HEADERS = ("host", "forwarded", "x-forwarded-proto", "x-forwarded-host",
                   "x-forwarded-port", "x-forwarded-prefix", "content-type")
_HISTORY_HEADER_VALUE = 1024
_HISTORY_BODY = 4096


def _history_names(req: SignedRequest) -> tuple[str, ...]:
    # Values that are secrets: verifiers and session handles always, and for PLAINTEXT
    # the signature (it is the secrets themselves).
    if req.signature_method == PLAINTEXT:
        return (*HIDDEN_PARAMETERS, "oauth_signature")
    return HIDDEN_PARAMETERS


def history_request(method: str, url: str, headers: Mapping[str, str], body: bytes,
                    remote_addr: str | None, req: SignedRequest) -> dict[str, Any] | None:
    """What the failure history keeps of a refused request so that
    :func:`debug_history_entry` can run the debugger on it later: the method, the URL as
    received, the headers of :data:`HISTORY_HEADERS` (lower-case names), the OAuth
    parameters of the Authorization header rebuilt, a form body re-encoded, and the
    sender's address. Secret values (verifiers, session handles, a PLAINTEXT signature)
    are replaced by :data:`MASK` wherever they occur and named in ``withheld``, as is
    ``"body"`` when the body kept is not the one sent. None when the form body is too
    large to keep (the entry then keeps the URL and base string only)."""
    names = _history_names(req)
    withheld: set[str] = set()
    kept: dict[str, str] = {}
    for name in HISTORY_HEADERS:
        value = headers.get(name)
        if value is not None and len(value) <= _HISTORY_HEADER_VALUE:
            kept[name] = value
    auth = headers.get("authorization")
    pairs = None
    if auth:
        try:
            pairs = parse_authorization(auth)
        except OAuthProblem:
            return None
    if pairs:
        withheld.update(n for n, _ in pairs if n in names)
        kept["authorization"] = "OAuth " + ", ".join(
            f'{escape(n)}="{escape(MASK if n in names else v)}"' for n, v in pairs)
    query = url.partition("?")[2].partition("#")[0]
    withheld.update(unquote_plus(part.partition("=")[0]) for part in query.split("&")
                    if unquote_plus(part.partition("=")[0]) in names)
    try:
        form = body_params(body, kept.get("content-type")) or body_params(body, None)
    except OAuthProblem:
        form = []
    text = ""
    if form:
        withheld.update(n for n, _ in form if n in names)
        text = "&".join(f"{escape(n)}={escape(MASK if n in names else v)}" for n, v in form)
        if len(text) > _HISTORY_BODY:
            return None
    if text.encode("utf-8") != body:
        withheld.add("body")
    return {"method": method, "url": mask_url(url, names), "headers": kept, "body": text,
            "remoteAddr": remote_addr, "withheld": sorted(withheld)}


def history_base_string(req: SignedRequest) -> str:
    """The base string the server computed for ``req``, secrets masked as in a report."""
    return base_string(masked_request(req))


def debug_history_entry(consumer_key: str, entry: Mapping[str, Any], load: Loader,
                        settings: Settings) -> Report:
    """The debugger's report for a refused request of ``consumer_key``'s failure history
    (services/failures.py): the request rebuilt from what the history kept
    (:func:`history_request`), checked by the server's checks at the moment of the
    refusal (the timestamp window counts from then), against the consumer and the token
    as they are now. ``history`` in the report names the refusal and what the server
    answered then. A value the history does not keep is not guessed (see
    ``withheld`` of :func:`debug_signature`)."""
    raw_time = entry.get("time")
    when = float(raw_time) if isinstance(raw_time, int | float) else time.time()
    history = {"consumerKey": consumer_key, "requestId": entry.get("requestId"),
               "time": _iso(when), "route": entry.get("route"), "step": entry.get("step"),
               "oauthProblem": entry.get("oauthProblem"), "status": entry.get("status"),
               "advice": entry.get("advice"), "skewSeconds": entry.get("skewSeconds")}
    report: Report | None = None
    part = entry.get("request")
    if isinstance(part, dict):
        withheld = [n for n in part.get("withheld") or () if isinstance(n, str)]
        try:
            dreq = debug_request(part.get("method"), part.get("url"), part.get("headers"),
                                 part.get("body") or "", part.get("remoteAddr"))
        except ValidationError:
            dreq = None
        if dreq is not None:
            report = debug_signature(dreq, load, settings, now=when, withheld=withheld)
    if report is None:
        report = _kept_only(entry)
    report.history = history
    report.summary = (f"From the failure history: request {history['requestId']} "
                      f"({entry.get('method')} {history['route']}, {history['time']}) was "
                      f"refused with {history['oauthProblem']}. {report.summary}")
    return report


def _kept_only(entry: Mapping[str, Any]) -> Report:
    """A report from the URL and base string alone (the request was too large to keep
    whole, or what was kept cannot be read as a request)."""
    def text(name: str) -> str | None:
        value = entry.get(name)
        return value if isinstance(value, str) else None

    return Report(
        verdict=CANNOT_TELL,
        summary=("The history kept only the URL and the base string of this request, so "
                 "the debugger cannot check it again; compare the base string with the one "
                 "the client computed."),
        method=text("method") or "", url=text("url") or "", server_url=text("url"),
        base_string=text("baseString"), signature_method=text("signatureMethod"),
        signature=text("signature") or (MASK if text("signatureMethod") else None))


def _public_key(consumer: ConsumerState) -> RSAPublicKey | None:
    if not consumer.public_key:
        return None
    try:
        return load_public_key(consumer.public_key)
    except ValueError:
        return None


def _why_unchecked(req: SignedRequest, consumer: ConsumerState, creds: Credentials,
                   kind: str | None, public_key: RSAPublicKey | None) -> str:
    method = req.signature_method
    if kind is not None and req.token and (
            creds.token is None or creds.token.consumer_key != consumer.key):
        return f"the token {req.token!r} is not known for this consumer, so its secret is not"
    if method in RSA_METHODS and public_key is None:
        return "the consumer has no usable RSA public key"
    if needs_secret(method) and creds.consumer_secret is None:
        return "the consumer has no shared secret"
    if method not in METHODS:
        return f"{method!r} is not a signature method the server knows"
    return "the secrets were not available"


# -- facts that do not depend on the signature ------------------------------------------


def _consumer_findings(req: SignedRequest, consumer: ConsumerState, creds: Credentials,
                       https: bool, settings: Settings) -> list[Finding]:
    out: list[Finding] = []
    method = req.signature_method
    registered = ", ".join(consumer.signature_methods) or "no method"
    if consumer.removed:
        out.append(Finding("consumer_removed", (
            f"The consumer {consumer.key!r} was removed by an administrator; the server "
            "refuses it (consumer_key_rejected) whatever the signature.")))
    if method not in METHODS:
        out.append(Finding("signature_method_unknown", (
            f"The client names the signature method {method!r}, which the server does not "
            f"know; the consumer is registered for {registered}.")))
    elif method not in consumer.signature_methods:
        out.append(Finding("signature_method_not_registered", (
            f"The client signed with {method}, but the consumer is registered for "
            f"{registered}. Sign with a registered method, or register {method} for the "
            "consumer (HMAC-* uses the shared secret, RSA-* the consumer's public key)."),
            {"used": method, "registered": list(consumer.signature_methods)}))
    if method == PLAINTEXT and not https and not (
            consumer.allow_plaintext_over_http or settings.allow_plaintext_over_http):
        out.append(Finding("plaintext_over_http", (
            "PLAINTEXT sends the secrets in the clear and the server accepts it only over "
            "https; this request is http.")))
    if needs_secret(method) and creds.consumer_secret is None:
        out.append(Finding("no_shared_secret", (
            f"{method} needs a shared secret, and none is registered for this consumer.")))
    if method in RSA_METHODS:
        if not consumer.public_key:
            out.append(Finding("no_public_key", (
                f"{method} needs the consumer's RSA public key, and none is registered.")))
        else:
            try:
                load_public_key(consumer.public_key)
            except ValueError as exc:
                out.append(Finding("public_key_unusable", (
                    f"The consumer's registered public key cannot be used: {exc}")))
    return out


def _timestamp_findings(req: SignedRequest, now: float, window: float) -> list[Finding]:
    raw = req.timestamp
    if raw is None:
        return []
    ts = int(raw)
    skew = ts - now
    if abs(skew) <= window:
        return []
    message = (
        f"oauth_timestamp {raw} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
        f"the server clock ({_iso(now)}); the server accepts ±{window:.0f} s "
        "(RFC 5849 §3.3). The client's clock is off (clock skew): keep it on NTP and send "
        "seconds since 1970-01-01 UTC, not local time.")
    if ts > now * 100:
        message += " The value looks like milliseconds; send seconds."
    return [Finding("timestamp_outside_window", message,
                    {"skewSeconds": int(round(skew)), "windowSeconds": int(window),
                     "serverTime": int(now)})]


def _token_findings(req: SignedRequest, creds: Credentials, settings: Settings,
                    kind: str | None, renewal: bool, https: bool, now: float
                    ) -> list[Finding]:
    """The server's token verdict on its own: the same checks, with the signature
    method, the PLAINTEXT rule and the timestamp set aside (they are reported above)."""
    consumer = creds.consumer
    if kind is None or consumer is None or req.signature_method not in METHODS:
        return []
    if req.token and creds.token is None:
        return [Finding("token_unknown", (
            f"The token {req.token!r} is not known here (never issued, or issued by "
            "another installation), so its secret is not either."))]
    relaxed = dataclasses.replace(
        consumer, removed=False, allow_plaintext_over_http=True,
        signature_methods=tuple(dict.fromkeys((*consumer.signature_methods,
                                               req.signature_method))))
    # The timestamp set to the server's clock, so that the window passes while token
    # expiry still counts from the real time.
    in_window = dataclasses.replace(req, oauth={**req.oauth, "oauth_timestamp": str(int(now))})
    try:
        _authenticator(settings, creds, now).check_signed(
            in_window, relaxed, creds.token, https=https, token_kind=kind, renewal=renewal)
    except OAuthProblem as problem:
        if problem.problem in ("signature_invalid", "signature_method_rejected"):
            return []  # the signature and the method are diagnosed elsewhere
        return [Finding(problem.problem, problem.advice or problem.problem)]
    except KeyError:
        return []
    return []


def _body_hash_findings(req: SignedRequest, dreq: DebugRequest) -> list[Finding]:
    """The oauth_body_hash extension (draft-eaton-oauth-bodyhash): a base64 hash of the
    raw body. oauthledger does not check it; a mismatch means the body changed after
    the client signed it, which a server that checks it refuses."""
    sent = req.oauth.get("oauth_body_hash")
    if sent is None:
        return []
    out: list[Finding] = []
    if any(name not in req.oauth for name, _ in body_params(dreq.body, dreq.content_type)):
        out.append(Finding("body_hash_on_form_body", (
            "oauth_body_hash is sent with a form body; the body-hash extension forbids that "
            "(form parameters are signed themselves).")))
    for algorithm in ("sha1", "sha256", "sha512"):
        digest = hashlib.new(algorithm, dreq.body).digest()
        if base64.b64encode(digest).decode("ascii") == sent:
            return out
    out.append(Finding("body_hash_mismatch", (
        "oauth_body_hash does not match the body (SHA-1, SHA-256 or SHA-512 of its bytes): "
        "the body was changed after the client signed it, or hashed in another encoding. "
        "oauthledger does not check oauth_body_hash, but a server that does refuses the "
        "request. Hash exactly the bytes that are sent.")))
    return out


def _no_match(method: str) -> Finding:
    if method in RSA_METHODS:
        cause = ("the client signs with a private key that does not belong to the public "
                 "key registered here")
    elif method == PLAINTEXT:
        cause = "the client sends other secrets than the ones registered here"
    else:
        cause = ("the client signs with another consumer secret (or token secret) than the "
                 "ones registered here")
    return Finding("no_match", (
        f"No single difference the debugger tries reproduces the client's signature: most "
        f"likely {cause}, or its base string differs in more than one place. Compare the "
        "base string shown with the one the client computed."))


# -- the search --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    req: SignedRequest
    findings: tuple[Finding, ...]


def _explain(dreq: DebugRequest, settings: Settings, server_url: str, req: SignedRequest,
             creds: Credentials, expected_token_secret: str | None,
             public_key: RSAPublicKey | None, token_checkable: bool
             ) -> tuple[list[tuple[Finding, ...]], bool]:
    """Every explanation with the fewest differences (secrets, URL, parameters, method)
    that reproduces the client's signature, each a tuple of its differences; and whether
    the search stopped early (a very large request)."""
    method = req.signature_method
    combos = _secret_combos(creds, expected_token_secret, token_checkable, method)
    if not combos or (method in RSA_METHODS and public_key is None):
        return [], False
    if method == PLAINTEXT:
        # The PLAINTEXT signature is the key itself: only the secrets can differ.
        candidates = [_Candidate(req, ())]
    else:
        candidates = [_Candidate(req, ()), *_method_candidates(req),
                      *_url_candidates(dreq, settings, server_url, req),
                      *_param_candidates(dreq, server_url, req)]
    unique: list[_Candidate] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...], str]] = set()
    for cand in candidates:
        key = (cand.req.base_uri, cand.req.params, cand.req.signature_method)
        if key not in seen:
            seen.add(key)
            unique.append(cand)
    unique.sort(key=lambda cand: len(cand.findings))  # stable: the specific ones first
    # Level by level (one difference, then two, ...): the first level with a match
    # holds every explanation of that size. Each try normalizes every parameter again,
    # so a large request gets a bounded number of tries (_BUDGET parameter encodings).
    budget = _BUDGET
    for rank in range(1, _MAX_RANK + 1):
        best: list[tuple[Finding, ...]] = []
        for cand in unique:
            if len(cand.findings) > rank:
                break
            for combo_finding, c, t in combos:
                if len(cand.findings) + (combo_finding is not None) != rank:
                    continue
                budget -= len(cand.req.params) + 1
                if budget < 0:
                    return [], True
                if verify(cand.req, consumer_secret=c, token_secret=t, public_key=public_key):
                    found = cand.findings + ((combo_finding,) if combo_finding else ())
                    if found not in best:
                        best.append(found)
        if best:
            return best, False
    return [], False


def _secret_combos(creds: Credentials, t: str | None, token_checkable: bool, method: str
                   ) -> list[tuple[Finding | None, str | None, str | None]]:
    """(finding, consumer secret, token secret) to try; the first is the server's own
    when it can be computed. For RSA the key is the public key: one entry."""
    if method in RSA_METHODS or (method not in METHODS and creds.consumer_secret is None):
        return [(None, None, None)] if method in RSA_METHODS else []
    c = creds.consumer_secret
    raw: list[tuple[Finding | None, str | None, str | None]] = []
    if c is not None and token_checkable:
        raw.append((None, c, t))
    if c is not None and (t is not None or not token_checkable):
        raw.append((_f_secret("consumer_secret_only"), c, None))
    if t is not None:
        raw.append((_f_secret("empty_consumer_secret"), "", t))
        if c is not None:
            raw.append((_f_secret("secrets_swapped"), t, c))
        raw.append((_f_secret("token_secret_as_consumer_secret"), t, None))
    elif c is not None:
        raw.append((_f_secret("empty_consumer_secret"), "", None))
    raw.append((_f_secret("empty_secrets"), "", ""))
    if c is not None and token_checkable:
        for code, secret in creds.related_token_secrets:
            raw.append((_f_secret(code), c, secret))
    out: list[tuple[Finding | None, str | None, str | None]] = []
    keys: set[tuple[str, str]] = set()
    for finding, cs, ts in raw:
        key = (escape(cs or ""), escape(ts or ""))
        if key not in keys:
            keys.add(key)
            out.append((finding, cs, ts))
    return out


_SECRET_MESSAGES = {
    "consumer_secret_only": (
        "The client signed with the consumer secret only (no token secret): its key was "
        "'consumer secret&' with nothing after the '&'. Sign with the oauth_token_secret "
        "the client received together with the token."),
    "empty_consumer_secret": (
        "The client signed with an empty consumer secret (the token secret only, or no "
        "secret at all without a token). Configure the consumer secret in the client."),
    "empty_secrets": (
        "The client signed with empty secrets: neither the consumer secret nor the token "
        "secret."),
    "secrets_swapped": (
        "The client swapped the secrets: it used the token secret in the consumer secret's "
        "place and the consumer secret in the token secret's."),
    "token_secret_as_consumer_secret": (
        "The client signed with the token secret in the consumer secret's place and no "
        "token secret."),
    "request_token_secret": (
        "The client signed with the consumer secret and the request token's secret. Since "
        "the exchange, sign with the access token's own secret (oauth_token_secret of the "
        "access-token reply)."),
    "renewed_from_secret": (
        "The client signed with the secret of the access token this one replaced at "
        "renewal; sign with the secret the renewal returned."),
}


def _f_secret(code: str) -> Finding:
    return Finding(code, _SECRET_MESSAGES[code])


def _method_candidates(req: SignedRequest) -> list[_Candidate]:
    """The signature computed with another method of the same family than the one the
    request names (the base string still names the one sent)."""
    method = req.signature_method
    family = HMAC_METHODS if method in HMAC_METHODS else (
        RSA_METHODS if method in RSA_METHODS else (*HMAC_METHODS, *RSA_METHODS))
    out = []
    for other in family:
        if other == method:
            continue
        out.append(_Candidate(
            dataclasses.replace(req, oauth={**req.oauth, "oauth_signature_method": other}),
            (Finding("signature_method_mislabeled", (
                f"The client computed the signature with {other}, but names {method} in "
                "oauth_signature_method; the server checks the method the request names."),
                {"named": method, "used": other}),)))
    return out


# URL candidates --------------------------------------------------------------------------


def _authority(text: str | None) -> tuple[str, int | None] | None:
    if not text:
        return None
    try:
        parts = urlsplit("//" + text.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    return (host.lower(), port) if host else None


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def _url_candidates(dreq: DebugRequest, settings: Settings, server_url: str,
                    req: SignedRequest) -> list[_Candidate]:
    out: list[_Candidate] = []
    base = urlsplit(req.base_uri)
    scheme, host, port, path = base.scheme, base.hostname or "", base.port, base.path
    headers = dreq.headers
    sent = urlsplit(dreq.url)

    def whole(url: str, finding: Finding) -> None:
        try:
            other = parse_request(req.method, url, headers, dreq.body, dreq.content_type)
        except OAuthProblem:
            return
        if other.base_uri != req.base_uri:
            message = finding.message.replace("{client}", other.base_uri).replace(
                "{server}", req.base_uri)
            out.append(_Candidate(dataclasses.replace(req, base_uri=other.base_uri),
                                  (dataclasses.replace(finding, message=message),)))

    query = server_url.partition("?")[2]
    as_sent = dreq.url.partition("#")[0]
    if settings.base_url:
        whole(as_sent, Finding("base_url", (
            "The client signed the URL it sent the request to ({client}), but the server "
            "rebuilds {server} from OAUTHLEDGER_BASE_URL "
            f"({settings.base_url}). Either the client calls another address than the "
            "external one (sign the external URL), or OAUTHLEDGER_BASE_URL is wrong.")))
    elif headers.get("host") and _authority(headers["host"]) != _authority(sent.netloc):
        whole(as_sent, Finding("host_header", (
            "The client signed the URL it sent the request to ({client}), but the Host "
            "header names another authority, and the server builds {server} from the Host "
            "header (RFC 5849 §3.4.1.2). A proxy rewrites the Host header: set "
            "OAUTHLEDGER_BASE_URL, or trust the proxy and have it send X-Forwarded-Host.")))
    forwarding = [h for h in ("forwarded", "x-forwarded-proto", "x-forwarded-host",
                              "x-forwarded-port", "x-forwarded-prefix") if h in headers]
    if forwarding:
        trusted = is_trusted(dreq.remote_addr, settings.trusted_proxies)
        everyone = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        try:
            fwd_url = signed_url(base_url=None, scheme=sent.scheme.lower(),
                                 host=headers.get("host") or sent.netloc, path=sent.path,
                                 query=query, remote_addr="127.0.0.1", headers=headers,
                                 trusted_proxies=everyone)
        except ValueError:
            fwd_url = ""
        if settings.base_url:
            why = "OAUTHLEDGER_BASE_URL is set, and it wins over forwarding headers"
        elif dreq.remote_addr is None:
            why = ("forwarding headers count only from an address in "
                   "OAUTHLEDGER_TRUSTED_PROXIES, and no sender address was given (give "
                   "the proxy's address to check it)")
        elif not trusted:
            why = (f"{dreq.remote_addr} is not in OAUTHLEDGER_TRUSTED_PROXIES; list the "
                   "proxy there")
        else:
            why = ""
        if fwd_url and why:
            whole(fwd_url, Finding("forwarding_headers_ignored", (
                "The client signed {client}, the external URL the forwarding headers ("
                + ", ".join(forwarding) + ") describe, but the server ignores them and "
                "computes {server}: " + why + ".")))

    hosts: list[tuple[str, Finding | None]] = [(host, None)]
    ports: list[int] = []
    for text in (sent.netloc, headers.get("host"), headers.get("x-forwarded-host"),
                 forwarded_pairs(headers.get("forwarded")).get("host"),
                 urlsplit(settings.base_url).netloc if settings.base_url else None):
        auth = _authority(text)
        if auth is None:
            continue
        if auth[0] not in [h for h, _ in hosts] and len(hosts) < 5:
            hosts.append((auth[0], Finding("host", (
                f"The client signed the host {auth[0]}, but the server computes the host "
                f"{host} ({req.base_uri}). Sign the URL the request is sent to; behind a "
                "proxy, set OAUTHLEDGER_BASE_URL to the external URL."))))
        if auth[1] is not None and auth[1] not in ports:
            ports.append(auth[1])
    xport = headers.get("x-forwarded-port", "").split(",")[0].strip()
    if xport.isdigit() and int(xport) not in ports:
        ports.append(int(xport))

    other = "http" if scheme == "https" else "https"
    schemes: list[tuple[str, Finding | None]] = [
        (scheme, None),
        (other, Finding("scheme", (
            f"The client signed an {other}:// URL, but the request reached the server as "
            f"{scheme}:// ({req.base_uri}). "
            + ("TLS probably ends at a proxy in front of oauthledger: set "
               "OAUTHLEDGER_BASE_URL to the external https URL, or list the proxy in "
               "OAUTHLEDGER_TRUSTED_PROXIES and have it send X-Forwarded-Proto."
               if scheme == "http" else
               "Sign the URL the request is sent to (a client configured with an http:// "
               "base URL and redirected to https:// signs the wrong one)."))))]

    paths = _path_variants(path, settings, headers)
    for sc, f_scheme in schemes:
        for h, f_host in hosts:
            for q, f_port in _port_variants(sc, port, ports, scheme):
                for p, f_path in paths:
                    found = tuple(f for f in (f_scheme, f_host, f_port, f_path) if f)
                    if not found or len(found) > _MAX_RANK:
                        continue
                    uri = f"{sc}://{_netloc(h, q)}{p}"
                    out.append(_Candidate(dataclasses.replace(req, base_uri=uri), found))
    out.sort(key=lambda c: len(c.findings))
    return out


def _port_variants(sc: str, port: int | None, seen: Sequence[int], server_scheme: str
                   ) -> list[tuple[int | None, Finding | None]]:
    """Ports to try with scheme ``sc``: the server's (``None``: the default, left out),
    the default written out, left off, and ports named elsewhere in the request."""
    default = _DEFAULT_PORTS[sc]
    out: list[tuple[int | None, Finding | None]] = []
    same = port if port != default else None
    out.append((same, None))
    out.append((default, Finding("default_port_written_out", (
        f"The client wrote the default port :{default} into the URL it signed; RFC 5849 "
        f"§3.4.1.2 leaves the default port (80 for http, 443 for https) out of the base "
        "string URI."))))
    if port is not None and port != default:
        out.append((None, Finding("port_left_off", (
            f"The client left the port :{port} out of the URL it signed; the request was "
            f"sent to port {port}, and RFC 5849 §3.4.1.2 keeps a port that is not the "
            "default in the base string URI."))))
    for q in seen:
        if q in (port, default) or (port is None and q == _DEFAULT_PORTS[server_scheme]):
            continue
        out.append((q, Finding("port", (
            f"The client signed port {q}, but the server computes "
            f"{'port ' + str(port) if port else 'the default port'}."))))
    return out


def _path_variants(path: str, settings: Settings, headers: Mapping[str, str]
                   ) -> list[tuple[str, Finding | None]]:
    out: list[tuple[str, Finding | None]] = [(path, None)]

    def add(p: str, finding: Finding) -> None:
        if p and p not in [x for x, _ in out]:
            out.append((p, finding))

    decoded = unquote(path)
    add(decoded, Finding("path_decoded", (
        f"The client signed the path decoded ({decoded}), but the request carries it "
        f"percent-encoded ({path}). Sign the path exactly as it is sent "
        "(RFC 5849 §3.4.1.2).")))
    # oauthlib writes a space of a decoded path as %20 (base_string_uri).
    add(decoded.replace(" ", "%20"), Finding("path_decoded", (
        f"The client signed the path decoded ({decoded}), but the request carries it "
        f"percent-encoded ({path}). Sign the path exactly as it is sent "
        "(RFC 5849 §3.4.1.2).")))
    for safe in ("/", "/:@!$&'()*+,;="):
        encoded = quote(decoded, safe=safe)
        add(encoded, Finding("path_encoded", (
            f"The client signed the path percent-encoded ({encoded}), but the request "
            f"carries {path}. Sign the path exactly as it is sent (RFC 5849 §3.4.1.2).")))
    if path.endswith("/") and path != "/":
        add(path.rstrip("/"), Finding("trailing_slash", (
            f"The client signed the path without its trailing slash; the request was sent "
            f"to {path}.")))
    elif not path.endswith("/"):
        add(path + "/", Finding("trailing_slash", (
            f"The client signed the path with a trailing slash ({path}/); the request was "
            f"sent to {path}.")))
    prefix = urlsplit(settings.base_url).path.rstrip("/") if settings.base_url else ""
    if prefix and path.startswith(prefix + "/"):
        add(path[len(prefix):], Finding("path_prefix", (
            f"The client signed the path without the prefix {prefix} of "
            "OAUTHLEDGER_BASE_URL; the server adds it (the path the client called is "
            "behind the proxy's prefix).")))
    fwd = (headers.get("x-forwarded-prefix") or "").split(",")[0].strip().rstrip("/")
    if fwd and not path.startswith(fwd + "/"):
        add(fwd + path, Finding("path_prefix", (
            f"The client signed the path with the prefix {fwd} (X-Forwarded-Prefix), but "
            "the server does not add it: list the proxy in OAUTHLEDGER_TRUSTED_PROXIES, or "
            "set OAUTHLEDGER_BASE_URL with the prefix.")))
    return out


# Parameter candidates --------------------------------------------------------------------


def _shown(name: str, value: str) -> str:
    return MASK if name in HIDDEN_PARAMETERS else value


def _param_candidates(dreq: DebugRequest, server_url: str, req: SignedRequest
                      ) -> list[_Candidate]:
    out: list[_Candidate] = []
    params = list(req.params)
    query = server_url.partition("?")[2].partition("#")[0]
    query_pairs = [p for p in parse_form(query, "query string") if not p[0].startswith("oauth_")]
    form_pairs = body_params(dreq.body, dreq.content_type)
    body_pairs = [p for p in form_pairs if not p[0].startswith("oauth_")]
    ctype = dreq.content_type

    def without(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        rest = list(params)
        for pair in pairs:
            if pair in rest:
                rest.remove(pair)
        return tuple(rest)

    # The body read the other way round than the server reads it.
    if form_pairs:
        try:
            other = parse_request(req.method, server_url, dreq.headers, dreq.body,
                                  "application/octet-stream")
            how = (f"Content-Type: {ctype}" if ctype else
                   "no Content-Type, and the body looks like a form")
            out.append(_Candidate(dataclasses.replace(req, params=other.params), (Finding(
                "body_form_not_signed", (
                    f"The body is read as a form ({how}), so the server signs its "
                    "parameters (RFC 5849 §3.4.1.3.1), but the client did not: it signed "
                    "as if the body were not a form. Send the Content-Type the client "
                    "signed with, or have it sign the form parameters.")),)))
        except OAuthProblem:
            pass
    elif body_params(dreq.body, None):
        # Not read as a form, although it looks like one (the server's own test for a
        # body without a Content-Type).
        try:
            other = parse_request(req.method, server_url, dreq.headers, dreq.body, _FORM)
            if other.params != req.params:
                sent_as = f"Content-Type: {ctype}" if ctype else "no Content-Type"
                out.append(_Candidate(dataclasses.replace(req, params=other.params), (Finding(
                    "body_not_form", (
                        f"The client signed the body's parameters as a form, but sent "
                        f"{sent_as}; the server reads parameters only from "
                        f"{_FORM} bodies (RFC 5849 §3.4.1.3.1). Send Content-Type: "
                        f"{_FORM}, or do not sign the body as a form.")),)))
        except OAuthProblem:
            pass

    for where, pairs in (("query", query_pairs), ("body", body_pairs)):
        for pair in pairs[:_MAX_PARAM_VARIANTS]:
            out.append(_Candidate(dataclasses.replace(req, params=without([pair])), (Finding(
                f"{where}_parameter_not_signed", (
                    f"The client left the {where} parameter {pair[0]} out of the base "
                    "string; RFC 5849 §3.4.1.3.1 signs every query and form parameter."),
                {"parameter": pair[0]}),)))
        if len(pairs) > 1:
            out.append(_Candidate(dataclasses.replace(req, params=without(pairs)), (Finding(
                f"{where}_parameters_not_signed", (
                    f"The client left all {where} parameters ("
                    + ", ".join(dict.fromkeys(n for n, _ in pairs))
                    + ") out of the base string; RFC 5849 §3.4.1.3.1 signs every query and "
                    "form parameter.")),)))

    transforms: list[tuple[str, Callable[[str], str], Callable[[str, str, str], str]]] = [
        ("double_encoded", escape, lambda n, v, w: (
            f"The client percent-encoded {n} twice: it signed the value {w}, while the "
            f"request carries {v} (once encoded on the wire). Give the library the plain "
            "value; it encodes once (RFC 5849 §3.6).")),
        ("decoded_value", _unquote_or_same, lambda n, v, w: (
            f"The request carries {n} percent-encoded twice ({v} after the server decoded "
            f"it once), but the client signed it decoded ({w}). Encode the value once.")),
        ("plus_for_space", lambda v: v.replace(" ", "+"), lambda n, v, w: (
            f"The client wrote the spaces of {n} as '+' in the base string; RFC 5849 §3.6 "
            "encodes a space as %20.")),
    ]
    for code, change, say in transforms:
        changed = [(i, n, v, change(v)) for i, (n, v) in enumerate(params)
                   if change(v) != v][:_MAX_PARAM_VARIANTS]
        for i, n, v, w in changed:
            new = list(params)
            new[i] = (n, w)
            out.append(_Candidate(dataclasses.replace(req, params=tuple(new)), (Finding(
                code, say(n, _shown(n, v), _shown(n, w)), {"parameter": n}),)))
        if len(changed) > 1:
            new = list(params)
            for i, n, _, w in changed:
                new[i] = (n, w)
            names = ", ".join(dict.fromkeys(n for _, n, _, _ in changed))
            out.append(_Candidate(dataclasses.replace(req, params=tuple(new)), (Finding(
                code, say(names, "(each value)", "(each value)"),
                {"parameters": names.split(", ")}),)))
    return out


def _unquote_or_same(value: str) -> str:
    return unquote(value) if "%" in value else value
