"""The dance endpoints: request token, authorize, access token (Atlassian paths and
RFC-style aliases, docs/oauth.md, "Endpoints")."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import falcon

from oauthledger.events.state import ConsumerState, TokenState, consumer_stream, token_stream
from oauthledger.services import dance
from oauthledger.services.deps import Deps
from oauthledger.services.http.context import form, meta, signed_request
from oauthledger.services.http.errors import mark_signed_request, note_accepted
from oauthledger.services.http.rendering import render
from oauthledger.services.http.session_cookies import current_session
from oauthledger.services.oauth.problems import OAuthProblem
from oauthledger.services.oauth.request import SignedRequest

FORM = "application/x-www-form-urlencoded"


def _form_reply(resp: falcon.Response, pairs: list[tuple[str, str]]) -> None:
    resp.status = falcon.HTTP_200
    resp.content_type = FORM
    resp.set_header("Cache-Control", "no-store")
    resp.text = urlencode(pairs)


def _load_consumer(deps: Deps, sreq: SignedRequest) -> ConsumerState | None:
    state, _ = deps.ledger.load(consumer_stream(sreq.consumer_key))
    assert state is None or isinstance(state, ConsumerState)
    return state


class RequestTokenResource:
    """POST: temporary credentials (RFC 5849 §2.1)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise OAuthProblem("parameter_rejected", "request tokens are issued to POST requests "
                           "only (RFC 5849 §2.1); send the same request as POST")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        sreq, https = signed_request(req, deps)
        # A refusal from here on is recorded in the consumer's failure history.
        mark_signed_request(req, sreq, "request-token")
        if sreq.token:
            raise OAuthProblem("parameter_rejected", "a request-token request carries no "
                               "oauth_token", oauth_parameters_rejected="oauth_token")
        consumer = _load_consumer(deps, sreq)
        deps.authenticator.check_signed(sreq, consumer, None, https=https, token_kind=None)
        deps.authenticator.consume_nonce(sreq)
        assert consumer is not None
        issued = dance.issue_request_token(
            deps.ledger, deps.sealer, deps.settings, consumer, sreq.callback,
            meta(req, consumer.key),
        )
        pairs = [("oauth_token", issued.token), ("oauth_token_secret", issued.secret)]
        if issued.callback_confirmed:
            pairs.append(("oauth_callback_confirmed", "true"))
        note_accepted(deps, consumer.key)
        _form_reply(resp, pairs)


class AccessTokenResource:
    """POST: token credentials (RFC 5849 §2.3), or renewal with oauth_session_handle."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise OAuthProblem("parameter_rejected", "access tokens are issued to POST requests "
                           "only (RFC 5849 §2.3); send the same request as POST")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        sreq, https = signed_request(req, deps)
        handle = sreq.oauth.get("oauth_session_handle")
        mark_signed_request(req, sreq, "access-token" if handle is None else "renewal")
        if not sreq.token:
            raise OAuthProblem("parameter_absent", "send the request token as oauth_token",
                               oauth_parameters_absent="oauth_token")
        loaded = deps.ledger.load_many([consumer_stream(sreq.consumer_key),
                                        token_stream(sreq.token)])
        consumer = loaded[consumer_stream(sreq.consumer_key)][0]
        token = loaded[token_stream(sreq.token)][0]
        assert consumer is None or isinstance(consumer, ConsumerState)
        assert token is None or isinstance(token, TokenState)
        kind = "access" if handle is not None else "request"
        deps.authenticator.check_signed(sreq, consumer, token, https=https, token_kind=kind,
                                        renewal=handle is not None)
        deps.authenticator.consume_nonce(sreq)
        assert consumer is not None and token is not None
        m = meta(req, consumer.key)
        if handle is not None:
            issued = dance.renew(deps.ledger, deps.sealer, deps.settings, consumer, token,
                                 handle, m)
        else:
            issued = dance.exchange(deps.ledger, deps.sealer, deps.settings, token,
                                    sreq.verifier, m)
        note_accepted(deps, consumer.key)
        _form_reply(resp, [
            ("oauth_token", issued.token),
            ("oauth_token_secret", issued.secret),
            ("oauth_expires_in", str(issued.expires_in)),
            ("oauth_authorization_expires_in", str(issued.authorization_expires_in)),
            ("oauth_session_handle", issued.session_handle),
        ])


def human_duration(seconds: float) -> str:
    """``604800`` -> ``7 days``; ``5400`` -> ``90 minutes`` (largest whole unit)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds)
    return f"{n} second{'s' if n != 1 else ''}"


def _callback_url(callback: str, pairs: list[tuple[str, str]]) -> str:
    parts = urlsplit(callback)
    query = parts.query + ("&" if parts.query else "") + urlencode(pairs)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class AuthorizeResource:
    """GET shows the approval page (after login); POST records approve or deny."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _load(self, token_id: str | None) -> tuple[TokenState, ConsumerState]:
        deps = self.deps
        if not token_id or len(token_id) > 200:
            raise OAuthProblem("parameter_absent", "the authorize link lacks oauth_token",
                               oauth_parameters_absent="oauth_token")
        loaded, _ = deps.ledger.load(token_stream(token_id))
        assert loaded is None or isinstance(loaded, TokenState)
        token = dance.authorizable(loaded, deps.clock())
        consumer, _ = deps.ledger.load(consumer_stream(token.consumer_key))
        assert consumer is None or isinstance(consumer, ConsumerState)
        if consumer is None or consumer.removed:
            raise OAuthProblem("consumer_key_rejected", "the consumer was removed")
        return token, consumer

    def _page_problem(self, resp: falcon.Response, problem: OAuthProblem) -> None:
        render(resp, self.deps, "problem.html", status=problem.status,
               title="This authorization link cannot be used", problem=problem.problem,
               advice=problem.advice or "")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        sess = current_session(req, deps)
        if sess is None or sess.user is None:
            raise falcon.HTTPSeeOther("/login?" + urlencode({"next": req.relative_uri}))
        try:
            token, consumer = self._load(req.get_param("oauth_token"))
        except OAuthProblem as problem:
            self._page_problem(resp, problem)
            return
        render(resp, deps, "authorize.html", user=sess.user, consumer=consumer, token=token,
               csrf=sess.csrf, lifetime=human_duration(deps.settings.access_token_ttl))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self.deps
        sess = current_session(req, deps)
        data = form(req)
        if sess is None or sess.user is None:
            raise falcon.HTTPSeeOther("/login")
        if not deps.sessions.csrf_ok(sess, data.get("csrf_token")):
            # No state change without the session's anti-CSRF token.
            render(resp, deps, "problem.html", status=403, title="Request refused",
                   problem="csrf", advice="The form expired or did not come from this site. "
                   "Go back, reload the page and try again.")
            return
        approve = "approve" in data
        if not approve and "deny" not in data:
            raise falcon.HTTPBadRequest(description="the form must carry approve or deny")
        try:
            token, consumer = self._load(data.get("oauth_token") or req.get_param("oauth_token"))
            verifier = dance.decide(deps.ledger, deps.sealer, token, sess.user, approve,
                                    meta(req, sess.user))
        except OAuthProblem as problem:
            self._page_problem(resp, problem)
            return
        value = verifier if approve else "denied"
        if token.callback in (None, "oob"):
            render(resp, deps, "authorized.html", consumer=consumer, approved=approve,
                   verifier=value if token.callback == "oob" else None)
            return
        pairs = [("oauth_token", token.token)]
        if value is not None:
            pairs.append(("oauth_verifier", value))
        raise falcon.HTTPSeeOther(_callback_url(token.callback, pairs))


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the dance at the Atlassian paths and the RFC-style aliases."""
    request_token = RequestTokenResource(deps)
    authorize = AuthorizeResource(deps)
    access_token = AccessTokenResource(deps)
    for prefix, names in (
        ("/plugins/servlet/oauth", ("request-token", "authorize", "access-token")),
        ("/oauth", ("initiate", "authorize", "token")),
    ):
        app.add_route(f"{prefix}/{names[0]}", request_token)
        app.add_route(f"{prefix}/{names[1]}", authorize)
        app.add_route(f"{prefix}/{names[2]}", access_token)
