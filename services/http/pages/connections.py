"""The users' side of the consumer role: the connections page, where each signed-in user
connects to the service providers an administrator added (this installation runs the
OAuth 1.0a dance as the consumer), sees each connection's state and disconnects
(docs/admin.md, "Connections").

Routes (names fixed by the HTTP contract):

- ``GET  /plugins/servlet/oauth/users/connections`` — the page;
- ``POST /plugins/servlet/oauth/service-providers/{name}/connect`` — start the dance,
  303 to the provider's authorize page;
- ``GET  /plugins/servlet/oauth/service-providers/{name}/callback`` — where the provider
  sends the user back; 303 to the page with the outcome;
- ``POST /plugins/servlet/oauth/users/connections/disconnect`` — forget the stored token.

Every POST carries the session's anti-CSRF token in the field ``csrf``
(synchronizer-token pattern, OWASP CSRF cheat sheet).

The outcome of a connect or a callback is carried to the page in the redirect
(Post/Redirect/Get) as the sentence the service produced plus an HMAC of it keyed by the
session's own CSRF secret. The page shows a sentence only when its MAC verifies for the
viewer's session, so text a third party puts into a link is never displayed: it can only
show what this server said to that same session.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

import falcon

from oauthledger.events.state import ConnectionState, ProviderState, UserState
from oauthledger.services import connections as conn_svc
from oauthledger.services import remote_fetch
from oauthledger.services.deps import Deps
from oauthledger.services.errors import NotFound
from oauthledger.services.http.access import page_session
from oauthledger.services.http.context import form, meta
from oauthledger.services.http.input_guard import impossible_identifier
from oauthledger.services.http.pages.base import Page, see_other, use_page_filters
from oauthledger.services.providers import MAX_NAME, load_provider
from oauthledger.services.sessions import Session

CONNECTIONS = conn_svc.CONNECTIONS_PAGE
DISCONNECT = f"{CONNECTIONS}/disconnect"
PROVIDER_PATH = conn_svc.PROVIDER_PATH
# The form field of the anti-CSRF token on this page's forms (HTTP contract).
CSRF_FIELD = "csrf"
# A message rides in the redirect's query: keep URLs short whatever a provider said.
MAX_MESSAGE = 500
# Domain separation: with the label, a MAC keyed by the session's CSRF secret means only
# "this server said this to this session".
_MAC_LABEL = b"oauthledger connection-message\x00"
# Query parameters of the provider's redirect back that finish_connect reads (RFC 5849
# §2.2: oauth_token and oauth_verifier; OAuth Problem Reporting: oauth_problem on a deny).
# What a provider may send back: RFC 5849 §2.2 (oauth_token, oauth_verifier), OAuth
# Problem Reporting (oauth_problem), and the denials of providers that do neither
# (error=access_denied as Authlib sends it; Twitter's denied=<token>).
_CALLBACK_PARAMS = ("oauth_token", "oauth_verifier", "oauth_problem", "error", "denied")


def base_url(req: falcon.Request, deps: Deps) -> str:
    """This installation's base URL for callbacks and for what other applications must
    register: OAUTHLEDGER_BASE_URL, else the scheme and host the request came to."""
    return (deps.settings.base_url or req.prefix).rstrip("/")


def provider_path(name: str, action: str) -> str:
    """``/plugins/servlet/oauth/service-providers/<name>/<action>``, the name
    percent-encoded as one path segment."""
    return f"{PROVIDER_PATH}/{quote(name, safe='')}/{action}"


def _mac(sess: Session, ok: bool, text: str) -> str:
    msg = _MAC_LABEL + (b"1" if ok else b"0") + b"\x00" + text.encode("utf-8")
    return hmac.new(sess.csrf.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def message_redirect(sess: Session, ok: bool, text: str) -> falcon.HTTPSeeOther:
    """A 303 to the connections page carrying ``text`` for this session only."""
    text = text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"
    return see_other(CONNECTIONS, ok="1" if ok else "0", msg=text, sig=_mac(sess, ok, text))


def carried_message(req: falcon.Request, sess: Session) -> tuple[bool, str] | None:
    """(ok, text) of the message a redirect carried, when this server made it for this
    session; None otherwise (no message, a forged or another session's one)."""
    text, ok, sig = (req.get_param("msg"), req.get_param("ok"), req.get_param("sig"))
    if not text or ok not in ("0", "1") or not sig or len(text) > MAX_MESSAGE:
        return None
    if not hmac.compare_digest(_mac(sess, ok == "1", text).encode(), sig.encode()):
        return None
    return ok == "1", text


def csrf_refused(resp: falcon.Response, deps: Deps, user: UserState, sess: Session,
                 data: dict[str, str]) -> bool:
    """True (and the 403 "Request refused" page rendered) when the form lacks the
    session's anti-CSRF token in ``csrf``; nothing is changed then."""
    if deps.sessions.csrf_ok(sess, data.get(CSRF_FIELD)):
        return False
    Page(deps).page(resp, "admin_forbidden.html", user, sess, status=403, reason="csrf")
    return True


def connection_rows(deps: Deps, user: str) -> list[dict[str, Any]]:
    """One row per service provider for ``user``'s page: the provider, the connection's
    view (services.connections.connection_view) and the form actions."""
    now = deps.ledger.clock()
    return [_row(provider, conn, now)
            for provider, conn in conn_svc.connections_of_user(deps.ledger, user)]


def _row(provider: ProviderState, conn: ConnectionState | None,
         now: float) -> dict[str, Any]:
    view = conn_svc.connection_view(provider, conn, now)
    return {"provider": provider, "view": view,
            "pending": bool(conn is not None and conn.pending_token
                            and (conn.pending_expires_at or 0) > now),
            "connect_action": provider_path(provider.name, "connect")}


class ConnectionsPage(Page):
    """GET the signed-in user's connections: a row per service provider."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        message = carried_message(req, sess)
        self.page(resp, "user_connections.html", user, sess,
                  rows=connection_rows(self.deps, user.name),
                  message_ok=message[0] if message else False,
                  message=message[1] if message else None, csrf_field=CSRF_FIELD)


class ConnectAction(Page):
    """POST: ask the provider for a request token and send the browser to its authorize
    page; on failure back to the connections page with the reason."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        user, sess = page_session(req, self.deps)
        if csrf_refused(resp, self.deps, user, sess, form(req)):
            return
        try:
            url = conn_svc.start_connect(
                self.deps.ledger, self.deps.sealer, name, user.name, sess.sid,
                base_url(req, self.deps), remote_fetch.policy(self.deps.settings, req.env),
                meta(req, user.name))
        except NotFound:
            # The name comes from the path: say nothing that repeats it.
            raise message_redirect(sess, False, "There is no such service provider (it "
                                                "may have been removed).") from None
        except conn_svc.ProviderUnavailable as exc:
            raise message_redirect(sess, False, str(exc)) from None
        raise falcon.HTTPSeeOther(url)


class CallbackAction(Page):
    """GET: the provider sends the user back here with ``oauth_token`` and
    ``oauth_verifier``; only the request token this session asked for is exchanged
    (services.connections.finish_connect)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        user, sess = page_session(req, self.deps)
        try:
            load_provider(self.deps.ledger, name)
        except NotFound:
            # Checked here so that the message never repeats a name from the path.
            raise message_redirect(sess, False, "There is no such service provider (it "
                                                "may have been removed). Nothing was "
                                                "stored.") from None
        params = {k: v for k in _CALLBACK_PARAMS if (v := req.get_param(k)) is not None}
        outcome = conn_svc.finish_connect(
            self.deps.ledger, self.deps.sealer, name, user.name, sess.sid, params,
            remote_fetch.policy(self.deps.settings, req.env), meta(req, user.name))
        raise message_redirect(sess, outcome.ok, outcome.message)


class DisconnectAction(Page):
    """POST ``provider``: forget the signed-in user's stored token for it."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        data = form(req)
        if csrf_refused(resp, self.deps, user, sess, data):
            return
        provider = data.get("provider", "")
        # A name no provider can have (services.http.input_guard) names no connection.
        usable = 0 < len(provider) <= MAX_NAME and not impossible_identifier(provider)
        dropped = usable and conn_svc.drop(self.deps.ledger, provider, user.name,
                                           by=user.name, reason="user",
                                           meta=meta(req, user.name))
        if dropped:
            # A connection existed, so the name is a provider's, not arbitrary text.
            raise message_redirect(sess, True, f"Disconnected from {provider}: its stored "
                                               "token was forgotten. You can also revoke "
                                               "the access there.")
        raise message_redirect(sess, True, "There was no connection to forget.")


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the connections page, connect, callback and disconnect."""
    use_page_filters(deps)
    app.add_route(CONNECTIONS, ConnectionsPage(deps))
    app.add_route(DISCONNECT, DisconnectAction(deps))
    app.add_route(PROVIDER_PATH + "/{name}/connect", ConnectAction(deps))
    app.add_route(PROVIDER_PATH + "/{name}/callback", CallbackAction(deps))
