"""The Service Providers tab: the applications we call as a consumer — list, add by hand,
add by another application's base URL, view (with what the other side must register and
every user's connection), edit, drop a user's connection, remove (docs/admin.md,
"Service Providers"). Where a provider is signed with this installation's RSA key, a key
under the recommended size is flagged (services.oauth.signatures.rsa_key_warning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import falcon

from oauthledger.events.state import InstallationState, ProviderState, UserState
from oauthledger.services import connections as conn_svc
from oauthledger.services import installation as inst
from oauthledger.services import providers as prov
from oauthledger.services import remote_fetch
from oauthledger.services.applinks_manifest import Manifest, fetch_manifest
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.http.context import meta
from oauthledger.services.http.input_guard import impossible_identifier
from oauthledger.services.http.pages.base import (
    ADMIN,
    Page,
    RemoveAction,
    admin_session,
    notice,
    see_other,
    use_page_filters,
)
from oauthledger.services.http.pages.connections import base_url
from oauthledger.services.oauth.signatures import rsa_key_warning
from oauthledger.services.sessions import Session

TAB = f"{ADMIN}/service-providers"
VIEW = f"{TAB}/view"
# The contract names the tab /plugins/servlet/oauth/service-providers; the pages live
# under OAuth Administration like the other tabs, and that path leads there.
TAB_ALIAS = conn_svc.PROVIDER_PATH

_EMPTY_PROVIDER = {"name": "", "description": "", "consumer_key": "", "use_rsa": False,
                   "request_token_url": "", "authorize_url": "", "access_token_url": ""}
_EMPTY_BY_URL = {"name": "", "base_url": "", "description": ""}
_URL_FIELDS = ("request_token_url", "authorize_url", "access_token_url")

# Notices of this tab (codes, never text from the request: see pages/base.py NOTICES).
_NOTICES = {
    "provider-updated": "The service provider was saved. Users' connections stay as they "
                        "were.",
    "provider-removed-forgotten": "The service provider was removed, and every user's "
                                  "stored token for it was forgotten.",
    "connection-dropped": "The user's stored token was forgotten. The user must connect "
                          "again to use the service provider.",
    "connection-gone": "That user had no connection to drop.",
}


def tab_notice(req: falcon.Request) -> str | None:
    """The text of the ``done`` code a redirect carried (shared or this tab's own)."""
    return notice(req) or _NOTICES.get(req.get_param("done") or "")


def installation_key_warning(info: InstallationState | None) -> str | None:
    """NIST SP 800-131A: the warning for this installation's RSA key when it is under
    2048 bits (an identity generated elsewhere or by an older release), or None."""
    return rsa_key_warning(info.public_key) if info is not None and info.public_key else None


class ProvidersPage(Page):
    """GET the Service Providers tab (list and both add forms); POST adds one by hand."""

    def show(self, req: falcon.Request, resp: falcon.Response, user: UserState,
             sess: Session, *, values: dict[str, Any] | None = None,
             errors: dict[str, str] | None = None, url_values: dict[str, str] | None = None,
             url_errors: dict[str, str] | None = None, status: int = 200) -> None:
        """Render the tab; each add form keeps its own values and field errors."""
        self.page(resp, "admin_providers.html", user, sess, status=status,
                  tab="service-providers", providers=prov.list_providers(self.deps.ledger),
                  key_warning=installation_key_warning(
                      inst.load_installation(self.deps.ledger)),
                  values=values or dict(_EMPTY_PROVIDER), errors=errors or {},
                  url_values=url_values or dict(_EMPTY_BY_URL), url_errors=url_errors or {},
                  notice=tab_notice(req))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is not None:
            self.show(req, resp, *who)

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
            self.show(req, resp, user, sess, values=values, errors=errors,
                      status=422 if isinstance(exc, ValidationError) else 409)
            return
        raise see_other(VIEW, name=state.name, done="provider-added")


class ProviderByUrlAction(ProvidersPage):
    """POST name, base_url, description: add another Atlassian-style application (another
    oauthledger, Jira, Confluence, ...) as a service provider by its base URL — its
    endpoints at the Atlassian paths under it, signed with this installation's RSA key,
    this installation's consumer-info key as the consumer key
    (services.providers.by_base_url). The other side registers us by our consumer-info
    URL, which the provider's page shows."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPSeeOther(TAB)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        values = {k: data.get(k, "") for k in _EMPTY_BY_URL}
        event_meta = meta(req, user.name)
        try:
            if values["base_url"].strip() and not (values["name"].strip()
                                                   and values["description"].strip()):
                values = self._from_manifest(req, values)
            info = inst.ensure_installation(self.deps.ledger, self.deps.sealer, event_meta)
            state = prov.add_provider(
                self.deps.ledger, self.deps.sealer,
                prov.by_base_url(values["name"], values["base_url"], info.key,
                                 values["description"]),
                event_meta)
        except (ValidationError, Conflict) as exc:
            if isinstance(exc, Conflict):
                errors = {"name": str(exc)}
            else:
                # The endpoints are derived from the base URL: their errors are its errors.
                errors = {}
                for field, message in exc.fields.items():
                    target = field if field in _EMPTY_BY_URL else "base_url"
                    errors.setdefault(target, message)
            self.show(req, resp, user, sess, url_values=values, url_errors=errors,
                      status=409 if isinstance(exc, Conflict) else 422)
            return
        raise see_other(VIEW, name=state.name, done="provider-added")

    def _from_manifest(self, req: falcon.Request, values: dict[str, str]) -> dict[str, str]:
        """``values`` with an empty name and description filled from the application's
        application-links manifest, when it publishes one. Raises ValidationError on
        ``base_url`` for an address the fetch policy refuses (it would be refused on
        every connect too)."""
        found = fetch_manifest(values["base_url"].strip(),
                               remote_fetch.policy(self.deps.settings, req.env))
        if found is None:
            return values
        filled = dict(values)
        if not filled["name"].strip():
            filled["name"] = found.name.strip()[:prov.MAX_NAME]
        if not filled["description"].strip():
            filled["description"] = manifest_description(found)
        return filled


def manifest_description(found: Manifest) -> str:
    """A provider description from another application's manifest: its type and
    version, e.g. "jira 9.12.2 (from its application-links manifest)"."""
    what = " ".join(p for p in (found.type_id, found.version) if p)
    return f"{what} (from its application-links manifest)" if what else ""


def _connection_rows(deps: Deps, provider: ProviderState) -> list[dict[str, Any]]:
    now = deps.ledger.clock()
    return [{"conn": c, "view": conn_svc.connection_view(provider, c, now),
             "pending": bool(c.pending_token and (c.pending_expires_at or 0) > now)}
            for c in conn_svc.connections_of_provider(deps.ledger, provider.name)]


class ProviderViewPage(Page):
    """GET ?name=: one service provider (never its secret), what the other side must
    register, every user's connection with a drop button, edit and remove."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        try:
            state = prov.load_provider(self.deps.ledger, req.get_param("name") or "")
        except NotFound:
            self.not_found(resp, *who, "service provider")
            return
        info = inst.load_installation(self.deps.ledger)
        base = base_url(req, self.deps)
        self.page(resp, "admin_provider_view.html", *who, tab="service-providers",
                  provider=state, info=info, notice=tab_notice(req),
                  key_warning=None if state.secret_sealed else installation_key_warning(info),
                  base=base, consumer_info_url=base + inst.CONSUMER_INFO_PATH,
                  callback=conn_svc.callback_url(base, state.name),
                  connections=_connection_rows(self.deps, state))


def _edit_values(state: ProviderState) -> dict[str, Any]:
    return {"name": state.name, "description": state.description,
            "consumer_key": state.consumer_key, "use_rsa": state.secret_sealed is None,
            "has_secret": state.secret_sealed is not None, "base_url": state.base_url or "",
            **{f: getattr(state, f) for f in _URL_FIELDS}}


class ProviderEditPage(Page):
    """GET ?name=: the edit form; POST saves it (services.providers.edit_provider). The
    name stays; a shared-secret field left empty keeps the stored secret; the users'
    connections stay."""

    def _load(self, resp: falcon.Response, user: UserState, sess: Session,
              name: str) -> ProviderState | None:
        try:
            return prov.load_provider(self.deps.ledger, name)
        except NotFound:
            self.not_found(resp, user, sess, "service provider")
            return None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        state = self._load(resp, *who, req.get_param("name") or "")
        if state is not None:
            self.page(resp, "admin_provider_edit.html", *who, tab="service-providers",
                      values=_edit_values(state), errors={})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        state = self._load(resp, user, sess, data.get("name", ""))
        if state is None:
            return
        use_rsa = data.get("signing") == "rsa"
        values: dict[str, Any] = {
            k: data.get(k, "") for k in ("description", "consumer_key", "base_url",
                                         *_URL_FIELDS)}
        old_base = state.base_url or ""
        new_base = values["base_url"].strip().rstrip("/")
        if old_base and new_base and new_base != old_base:
            # A provider added by base URL that moves: its endpoints move with it, unless
            # the admin changed them by hand in the same edit.
            old_endpoints = prov.endpoints_under(old_base)
            if all(values[k].strip() == old_endpoints[k] for k in old_endpoints):
                values.update(prov.endpoints_under(new_base))
        changes = {**values, "use_rsa": use_rsa,
                   "shared_secret": data.get("shared_secret", "")}
        event_meta = meta(req, user.name)
        try:
            if use_rsa:
                inst.ensure_installation(self.deps.ledger, self.deps.sealer, event_meta)
            prov.edit_provider(self.deps.ledger, self.deps.sealer, state.name, changes,
                               event_meta)
        except ValidationError as exc:
            shown = {**_edit_values(state), **values, "use_rsa": use_rsa}
            self.page(resp, "admin_provider_edit.html", user, sess, status=422,
                      tab="service-providers", values=shown, errors=exc.fields)
            return
        raise see_other(VIEW, name=state.name, done="provider-updated")


class ConnectionDropAction(Page):
    """POST name, user: forget one user's stored token for a provider (the user must
    connect again); the provider is not told (services.connections.drop)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        admin, sess, data = posted
        try:
            state = prov.load_provider(self.deps.ledger, data.get("name", ""))
        except NotFound:
            self.not_found(resp, admin, sess, "service provider")
            return
        who = data.get("user", "")
        # A name no account can have (services.http.input_guard) has no connection.
        dropped = bool(who) and not impossible_identifier(who) and conn_svc.drop(
            self.deps.ledger, state.name, who, by=admin.name, reason="admin",
            meta=meta(req, admin.name))
        raise see_other(VIEW, name=state.name,
                        done="connection-dropped" if dropped else "connection-gone")


class ProviderRemoveAction(RemoveAction):
    """POST name: remove a service provider; every user's stored token for it is
    forgotten in the same commit (services.providers.remove_provider)."""

    field, noun, back, done = "name", "service provider", TAB, "provider-removed-forgotten"

    def remove(self, ident: str, event_meta: Mapping[str, Any]) -> object:
        """:func:`oauthledger.services.providers.remove_provider`."""
        return prov.remove_provider(self.deps.ledger, ident, event_meta)


class TabAlias:
    """GET the contract's short path of the tab: 303 to the tab itself."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPSeeOther(TAB)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the Service Providers tab and its pages and actions."""
    use_page_filters(deps)
    app.add_route(TAB, ProvidersPage(deps))
    app.add_route(f"{TAB}/by-url", ProviderByUrlAction(deps))
    app.add_route(VIEW, ProviderViewPage(deps))
    app.add_route(f"{TAB}/edit", ProviderEditPage(deps))
    app.add_route(f"{TAB}/drop", ConnectionDropAction(deps))
    app.add_route(f"{TAB}/remove", ProviderRemoveAction(deps))
    app.add_route(TAB_ALIAS, TabAlias())
