"""The OAuth Administration pages (consumers, consumer info, service providers, all
tokens) and the users' access-token page, server-rendered with Jinja2.

Rules every handler follows (issue 5, "Safety"): admins only (anonymous users go to the
login page, others get 403); every POST carries the session's anti-CSRF token
(synchronizer-token pattern) or changes nothing; invalid input is shown next to its
field and changes nothing; secrets are shown once, on the page that created them; the
security headers of services.http.web (X-Frame-Options DENY, CSP frame-ancestors 'none')
apply to every page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import falcon

from oauthledger.events.state import UserState
from oauthledger.services import consumers as svc
from oauthledger.services import installation as inst
from oauthledger.services import providers as prov
from oauthledger.services import tokens as tok
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.http.access import page_session
from oauthledger.services.http.web import form, meta, render
from oauthledger.services.oauth.signatures import METHODS
from oauthledger.services.sessions import Session

ADMIN = "/plugins/servlet/oauth/admin"
USER_TOKENS = "/plugins/servlet/oauth/users/access-tokens"

# Notices after a redirect (Post/Redirect/Get) are codes, never text from the request,
# so nothing a third party puts in a link is displayed.
NOTICES = {
    "consumer-updated": "The consumer was saved.",
    "consumer-removed": "The consumer was removed and all its tokens were revoked.",
    "info-updated": "The consumer info was saved.",
    "key-rotated": "A new key pair was generated. Give service providers the new public key.",
    "provider-added": "The service provider was added.",
    "provider-removed": "The service provider was removed.",
    "token-revoked": "The access token was revoked. The application can no longer use it.",
    "token-gone": "That token was already revoked, renewed or expired.",
}

CONSUMER_FLAGS = ("three_legged", "allow_impersonation", "allow_oauth10")

# What a 404 page names -> (its tab, the page it links back to).
_NOT_FOUND_TABS = {
    "consumer": ("consumers", ADMIN),
    "service provider": ("service-providers", f"{ADMIN}/service-providers"),
}


def when(ts: float | None) -> str:
    """A timestamp for people: UTC, to the minute."""
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


# -- guards ------------------------------------------------------------------------------


def _admin(req: falcon.Request, resp: falcon.Response, deps: Deps
           ) -> tuple[UserState, Session] | None:
    """The admin and their session; anonymous users are sent to log in (page_session),
    other users get a 403 page. None means the response is already rendered."""
    user, sess = page_session(req, deps)
    if not user.admin:
        render(resp, deps, "admin_forbidden.html", status=403, user=user, csrf=sess.csrf)
        return None
    return user, sess


def _csrf_refused(req: falcon.Request, resp: falcon.Response, deps: Deps, user: UserState,
                  sess: Session, data: dict[str, str]) -> bool:
    """True (and a 403 page rendered) when the form lacks the session's CSRF token."""
    if deps.sessions.csrf_ok(sess, data.get("csrf_token")):
        return False
    render(resp, deps, "admin_forbidden.html", status=403, user=user, csrf=sess.csrf,
           reason="csrf")
    return True


def _multi(req: falcon.Request) -> dict[str, list[str]]:
    """Every value of every form field (checkbox groups repeat their name)."""
    form(req)  # reads and caches the body (64 KiB cap)
    out: dict[str, list[str]] = {}
    for k, v in parse_qsl(req.context.body.decode("utf-8"), keep_blank_values=True):
        out.setdefault(k, []).append(v)
    return out


def _see_other(path: str, **params: str) -> falcon.HTTPSeeOther:
    return falcon.HTTPSeeOther(path + ("?" + urlencode(params) if params else ""))


def _notice(req: falcon.Request) -> str | None:
    return NOTICES.get(req.get_param("done") or "")


class _Page:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def admin_post(self, req: falcon.Request, resp: falcon.Response
                   ) -> tuple[UserState, Session, dict[str, str]] | None:
        """The admin, their session and the posted form, once both the admin check and
        the anti-CSRF check passed; None when a refusal page is already rendered."""
        who = _admin(req, resp, self.deps)
        if who is None:
            return None
        user, sess = who
        data = form(req)
        if _csrf_refused(req, resp, self.deps, user, sess, data):
            return None
        return user, sess, data

    def page(self, resp: falcon.Response, template: str, user: UserState, sess: Session,
             status: int = 200, **context: Any) -> None:
        render(resp, self.deps, template, status=status, user=user, csrf=sess.csrf,
               **context)

    def not_found(self, resp: falcon.Response, user: UserState, sess: Session,
                  what: str) -> None:
        """The 404 page for a consumer or a service provider, linking back to its tab."""
        tab, back = _NOT_FOUND_TABS[what]
        self.page(resp, "admin_not_found.html", user, sess, status=404, tab=tab, what=what,
                  back=back)


# -- consumers ---------------------------------------------------------------------------


def _consumer_form_values(data: dict[str, str], multi: dict[str, list[str]]
                          ) -> dict[str, Any]:
    """What the admin typed, to show again after an error (never a secret)."""
    values: dict[str, Any] = {k: data.get(k, "") for k in (
        "key", "name", "description", "callback_url", "public_key", "two_legged_user")}
    values["signature_methods"] = multi.get("signature_methods", [])
    for flag in CONSUMER_FLAGS:
        values[flag] = flag in data
    return values


def _consumer_values(state: Any) -> dict[str, Any]:
    return {
        "key": state.key, "name": state.name, "description": state.description,
        "callback_url": state.callback_url or "", "public_key": state.public_key or "",
        "two_legged_user": state.two_legged_user or "",
        "signature_methods": list(state.signature_methods),
        "three_legged": state.three_legged, "allow_impersonation": state.allow_impersonation,
        "allow_oauth10": state.allow_oauth10,
    }


def _empty_consumer() -> dict[str, Any]:
    return {"key": "", "name": "", "description": "", "callback_url": "", "public_key": "",
            "two_legged_user": "", "signature_methods": [], "three_legged": True,
            "allow_impersonation": False, "allow_oauth10": False}


def _consumer_input(data: dict[str, str], multi: dict[str, list[str]], *, adding: bool
                    ) -> svc.ConsumerInput:
    methods = multi.get("signature_methods", [])
    secret = data.get("secret", "")
    return svc.ConsumerInput(
        name=data.get("name", ""), description=data.get("description", ""),
        callback_url=data.get("callback_url", ""), public_key=data.get("public_key", ""),
        # An empty secret field keeps the current secret (it is never shown to edit).
        secret=secret if secret else None,
        generate_secret="generate_secret" in data,
        # Adding with no method ticked: defaults follow the credentials given.
        signature_methods=None if adding and not methods else methods,
        two_legged_user=data.get("two_legged_user", ""),
        **{flag: flag in data for flag in CONSUMER_FLAGS},
    )


def _add_form(page: _Page, resp: falcon.Response, user: UserState, sess: Session,
              values: dict[str, Any], errors: dict[str, str], status: int = 200,
              fetched: Any = None) -> None:
    """The add-consumer form (by hand, after a refused POST, or filled in by a fetch):
    a new consumer has no history and no tokens yet."""
    page.page(resp, "admin_consumer_form.html", user, sess, status=status, tab="consumers",
              mode="add", values=values, errors=errors, methods=METHODS, fetched=fetched,
              history=[], outstanding=0)


class ConsumersPage(_Page):
    """GET the Consumers tab: every consumer with its flags and outstanding tokens."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        states = svc.list_consumers(self.deps.ledger)
        counts = svc.outstanding_tokens(self.deps.ledger, [s.key for s in states])
        self.page(resp, "admin_consumers.html", *who, tab="consumers", consumers=states,
                  counts=counts, notice=_notice(req))


class ConsumerAddPage(_Page):
    """GET the add-by-hand form; POST registers (also the confirm step of add-by-URL)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        _add_form(self, resp, *who, _empty_consumer(), {})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        multi = _multi(req)
        key = data.get("key", "").strip()
        try:
            state, secret = svc.register_consumer(
                self.deps.ledger, self.deps.sealer, key,
                _consumer_input(data, multi, adding=True), meta(req, user.name))
        except (ValidationError, Conflict) as exc:
            errors = exc.fields if isinstance(exc, ValidationError) else {"key": str(exc)}
            _add_form(self, resp, user, sess, _consumer_form_values(data, multi), errors,
                      status=422 if isinstance(exc, ValidationError) else 409)
            return
        # The generated secret is shown on this page, once; it is never shown again.
        self.page(resp, "admin_consumer_created.html", user, sess, status=201,
                  tab="consumers", consumer=state, secret=secret)


class ConsumerFetchPage(_Page):
    """GET the add-by-URL form; POST fetches the other application's consumer info and
    shows the add form filled in with it, to review and confirm."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        self.page(resp, "admin_consumer_fetch.html", *who, tab="consumers", base_url="",
                  errors={})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        base_url = data.get("base_url", "").strip()
        try:
            info = inst.fetch_consumer_info(base_url)
        except ValidationError as exc:
            self.page(resp, "admin_consumer_fetch.html", user, sess, status=422,
                      tab="consumers", base_url=base_url, errors=exc.fields)
            return
        values = {**_empty_consumer(), "key": info.key, "name": info.name,
                  "description": info.description, "public_key": info.public_key,
                  "callback_url": info.callback_url or ""}
        _add_form(self, resp, user, sess, values, {}, fetched=info)


class ConsumerEditPage(_Page):
    """GET ?key=: the consumer's settings (editable, key fixed), its recent history from
    the log and the remove button; POST saves."""

    def _render(self, resp: falcon.Response, user: UserState, sess: Session, key: str,
                values: dict[str, Any], errors: dict[str, str], status: int = 200,
                notice: str | None = None) -> None:
        state = svc.load_consumer(self.deps.ledger, key)
        self.page(resp, "admin_consumer_form.html", user, sess, status=status,
                  tab="consumers", mode="edit", values=values, errors=errors,
                  methods=METHODS, fetched=None, consumer=state, notice=notice,
                  history=svc.consumer_history(self.deps.ledger, key, limit=20),
                  outstanding=svc.outstanding_tokens(self.deps.ledger, [key])[key])

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        key = req.get_param("key") or ""
        try:
            state = svc.load_consumer(self.deps.ledger, key)
        except NotFound:
            self.not_found(resp, *who, "consumer")
            return
        self._render(resp, *who, key, _consumer_values(state), {}, notice=_notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        multi = _multi(req)
        key = data.get("key", "")
        try:
            _, secret = svc.update_consumer(self.deps.ledger, self.deps.sealer, key,
                                            _consumer_input(data, multi, adding=False),
                                            meta(req, user.name))
        except NotFound:
            self.not_found(resp, user, sess, "consumer")
            return
        except ValidationError as exc:
            values = {**_consumer_form_values(data, multi), "key": key}
            self._render(resp, user, sess, key, values, exc.fields, status=422)
            return
        if secret is not None:
            state = svc.load_consumer(self.deps.ledger, key)
            self.page(resp, "admin_consumer_created.html", user, sess, tab="consumers",
                      consumer=state, secret=secret, updated=True)
            return
        raise _see_other(f"{ADMIN}/consumers/edit", key=key, done="consumer-updated")


class ConsumerRemoveAction(_Page):
    """POST key: remove the consumer and revoke all its tokens in one commit."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        try:
            svc.remove_consumer(self.deps.ledger, data.get("key", ""), meta(req, user.name))
        except NotFound:
            self.not_found(resp, user, sess, "consumer")
            return
        raise _see_other(ADMIN, done="consumer-removed")


# -- consumer info -----------------------------------------------------------------------


class ConsumerInfoPage(_Page):
    """GET this installation's identity; POST changes its name and description."""

    def _show(self, req: falcon.Request, resp: falcon.Response, user: UserState,
              sess: Session, errors: dict[str, str], values: dict[str, str] | None = None,
              status: int = 200) -> None:
        state = inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, user.name))
        values = values or {"name": state.name, "description": state.description}
        self.page(resp, "admin_consumer_info.html", user, sess, status=status,
                  tab="consumer-info", info=state, values=values, errors=errors,
                  notice=_notice(req), xml_path=inst.CONSUMER_INFO_PATH)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is not None:
            self._show(req, resp, *who, errors={})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        values = {"name": data.get("name", ""), "description": data.get("description", "")}
        try:
            inst.update_installation(self.deps.ledger, self.deps.sealer, values["name"],
                                     values["description"], meta(req, user.name))
        except ValidationError as exc:
            self._show(req, resp, user, sess, exc.fields, values, status=422)
            return
        raise _see_other(f"{ADMIN}/consumer-info", done="info-updated")


class RotateAction(_Page):
    """POST: generate a new key pair for this installation."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, _ = posted
        inst.rotate_key_pair(self.deps.ledger, self.deps.sealer, meta(req, user.name))
        raise _see_other(f"{ADMIN}/consumer-info", done="key-rotated")


# -- service providers -------------------------------------------------------------------

_EMPTY_PROVIDER = {"name": "", "description": "", "consumer_key": "", "use_rsa": False,
                   "request_token_url": "", "authorize_url": "", "access_token_url": ""}


class ProvidersPage(_Page):
    """GET the Service Providers tab (list and add form); POST adds one."""

    def _show(self, req: falcon.Request, resp: falcon.Response, user: UserState,
              sess: Session, values: dict[str, Any], errors: dict[str, str],
              status: int = 200) -> None:
        self.page(resp, "admin_providers.html", user, sess, status=status,
                  tab="service-providers", providers=prov.list_providers(self.deps.ledger),
                  values=values, errors=errors, notice=_notice(req))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is not None:
            self._show(req, resp, *who, dict(_EMPTY_PROVIDER), {})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        use_rsa = data.get("signing") == "rsa"
        values = {k: data.get(k, "") for k in _EMPTY_PROVIDER if k != "use_rsa"}
        values["use_rsa"] = use_rsa
        data_in = prov.ProviderInput(
            name=values["name"], description=values["description"],
            consumer_key=values["consumer_key"], shared_secret=data.get("shared_secret", ""),
            use_rsa=use_rsa, request_token_url=values["request_token_url"],
            authorize_url=values["authorize_url"], access_token_url=values["access_token_url"])
        try:
            if use_rsa:
                inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, user.name))
            state = prov.add_provider(self.deps.ledger, self.deps.sealer, data_in,
                                      meta(req, user.name))
        except (ValidationError, Conflict) as exc:
            errors = exc.fields if isinstance(exc, ValidationError) else {"name": str(exc)}
            self._show(req, resp, user, sess, values, errors,
                       status=422 if isinstance(exc, ValidationError) else 409)
            return
        raise _see_other(f"{ADMIN}/service-providers/view", name=state.name,
                         done="provider-added")


class ProviderViewPage(_Page):
    """GET ?name=: one service provider (never its secret) and its remove button."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        try:
            state = prov.load_provider(self.deps.ledger, req.get_param("name") or "")
        except NotFound:
            self.not_found(resp, *who, "service provider")
            return
        info = inst.load_installation(self.deps.ledger)
        self.page(resp, "admin_provider_view.html", *who, tab="service-providers",
                  provider=state, info=info, notice=_notice(req))


class ProviderRemoveAction(_Page):
    """POST name: remove a service provider."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        try:
            prov.remove_provider(self.deps.ledger, data.get("name", ""), meta(req, user.name))
        except NotFound:
            self.not_found(resp, user, sess, "service provider")
            return
        raise _see_other(f"{ADMIN}/service-providers", done="provider-removed")


# -- tokens ------------------------------------------------------------------------------


class AdminTokensPage(_Page):
    """GET every access token, filterable by user, consumer and status; POST revokes."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = _admin(req, resp, self.deps)
        if who is None:
            return
        filters = {k: (req.get_param(k) or "").strip()[:200] for k in ("user", "consumer",
                                                                      "status")}
        if filters["status"] not in ("", *tok.STATUSES):
            filters["status"] = ""
        rows = tok.list_access_tokens(self.deps.ledger, user=filters["user"] or None,
                                      consumer=filters["consumer"] or None,
                                      status=filters["status"] or None)
        self.page(resp, "tokens_admin.html", *who, tab="tokens", rows=rows,
                  filters=filters, statuses=tok.STATUSES,
                  consumers=svc.list_consumers(self.deps.ledger), notice=_notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        done = _revoke(self.deps, req, data.get("token", ""), user.name, owner=None)
        back = {k: data[k] for k in ("user", "consumer", "status") if data.get(k)}
        raise _see_other(f"{ADMIN}/tokens", **back, done=done)


def _revoke(deps: Deps, req: falcon.Request, token: str, by: str, owner: str | None) -> str:
    try:
        state = tok.revoke_token(deps.ledger, token, by=by, meta=meta(req, by), owner=owner)
    except NotFound:
        return "token-gone"
    return "token-revoked" if state.status == "revoked" else "token-gone"


class UserTokensPage(_Page):
    """GET the signed-in user's access tokens; POST revokes one of them."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        rows = tok.list_access_tokens(self.deps.ledger, user=user.name)
        self.page(resp, "tokens_user.html", user, sess,
                  active=[r for r in rows if r.status == "active"],
                  past=[r for r in rows if r.status != "active"][:50], notice=_notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, sess = page_session(req, self.deps)
        data = form(req)
        if _csrf_refused(req, resp, self.deps, user, sess, data):
            return
        done = _revoke(self.deps, req, data.get("token", ""), user.name, owner=user.name)
        raise _see_other(USER_TOKENS, done=done)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the pages and give the templates the ``when`` filter."""
    env = deps.extras["templates"]
    env.filters.setdefault("when", when)
    routes: list[tuple[str, Callable[[Deps], _Page]]] = [
        (ADMIN, ConsumersPage),
        (f"{ADMIN}/consumers/add", ConsumerAddPage),
        (f"{ADMIN}/consumers/fetch", ConsumerFetchPage),
        (f"{ADMIN}/consumers/edit", ConsumerEditPage),
        (f"{ADMIN}/consumers/remove", ConsumerRemoveAction),
        (f"{ADMIN}/consumer-info", ConsumerInfoPage),
        (f"{ADMIN}/consumer-info/rotate", RotateAction),
        (f"{ADMIN}/service-providers", ProvidersPage),
        (f"{ADMIN}/service-providers/view", ProviderViewPage),
        (f"{ADMIN}/service-providers/remove", ProviderRemoveAction),
        (f"{ADMIN}/tokens", AdminTokensPage),
        (USER_TOKENS, UserTokensPage),
    ]
    for path, cls in routes:
        app.add_route(path, cls(deps))
