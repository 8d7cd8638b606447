"""The Service Providers tab: the applications we call as a consumer (list, add, view,
remove). Where a provider is signed with this installation's RSA key, a key under the
recommended size is flagged (services.oauth.signatures.rsa_key_warning)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import falcon

from oauthledger.events.state import InstallationState, UserState
from oauthledger.services import installation as inst
from oauthledger.services import providers as prov
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.http.context import meta
from oauthledger.services.http.pages.base import (
    ADMIN,
    Page,
    RemoveAction,
    admin_session,
    notice,
    see_other,
    use_page_filters,
)
from oauthledger.services.oauth.signatures import rsa_key_warning
from oauthledger.services.sessions import Session

_EMPTY_PROVIDER = {"name": "", "description": "", "consumer_key": "", "use_rsa": False,
                   "request_token_url": "", "authorize_url": "", "access_token_url": ""}


def installation_key_warning(info: InstallationState | None) -> str | None:
    """NIST SP 800-131A: the warning for this installation's RSA key when it is under
    2048 bits (an identity generated elsewhere or by an older release), or None."""
    return rsa_key_warning(info.public_key) if info is not None and info.public_key else None


class ProvidersPage(Page):
    """GET the Service Providers tab (list and add form); POST adds one."""

    def _show(self, req: falcon.Request, resp: falcon.Response, user: UserState,
              sess: Session, values: dict[str, Any], errors: dict[str, str],
              status: int = 200) -> None:
        self.page(resp, "admin_providers.html", user, sess, status=status,
                  tab="service-providers", providers=prov.list_providers(self.deps.ledger),
                  key_warning=installation_key_warning(
                      inst.load_installation(self.deps.ledger)),
                  values=values, errors=errors, notice=notice(req))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
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
        raise see_other(f"{ADMIN}/service-providers/view", name=state.name,
                        done="provider-added")


class ProviderViewPage(Page):
    """GET ?name=: one service provider (never its secret) and its remove button."""

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
        self.page(resp, "admin_provider_view.html", *who, tab="service-providers",
                  provider=state, info=info, notice=notice(req),
                  key_warning=None if state.secret_sealed else installation_key_warning(info))


class ProviderRemoveAction(RemoveAction):
    """POST name: remove a service provider."""

    field, noun, back, done = "name", "service provider", f"{ADMIN}/service-providers", (
        "provider-removed")

    def remove(self, ident: str, event_meta: Mapping[str, Any]) -> object:
        """:func:`oauthledger.services.providers.remove_provider`."""
        return prov.remove_provider(self.deps.ledger, ident, event_meta)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the Service Providers tab, the provider view and removal."""
    use_page_filters(deps)
    app.add_route(f"{ADMIN}/service-providers", ProvidersPage(deps))
    app.add_route(f"{ADMIN}/service-providers/view", ProviderViewPage(deps))
    app.add_route(f"{ADMIN}/service-providers/remove", ProviderRemoveAction(deps))
