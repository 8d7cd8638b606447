"""The Consumer Info tab: this installation's identity (name, description, public key)
and the rotation of its key pair."""

from __future__ import annotations

import falcon

from oauthledger.events.state import UserState
from oauthledger.services import installation as inst
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.context import meta
from oauthledger.services.http.pages.base import (
    ADMIN,
    Page,
    admin_session,
    notice,
    see_other,
    use_page_filters,
)
from oauthledger.services.sessions import Session


class ConsumerInfoPage(Page):
    """GET this installation's identity; POST changes its name and description."""

    def _show(self, req: falcon.Request, resp: falcon.Response, user: UserState,
              sess: Session, errors: dict[str, str], values: dict[str, str] | None = None,
              status: int = 200) -> None:
        state = inst.ensure_installation(self.deps.ledger, self.deps.sealer,
                                         meta(req, user.name))
        values = values or {"name": state.name, "description": state.description}
        self.page(resp, "admin_consumer_info.html", user, sess, status=status,
                  tab="consumer-info", info=state, values=values, errors=errors,
                  notice=notice(req), xml_path=inst.CONSUMER_INFO_PATH)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
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
        raise see_other(f"{ADMIN}/consumer-info", done="info-updated")


class RotateAction(Page):
    """POST: generate a new key pair for this installation."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, _ = posted
        inst.rotate_key_pair(self.deps.ledger, self.deps.sealer, meta(req, user.name))
        raise see_other(f"{ADMIN}/consumer-info", done="key-rotated")


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the Consumer Info tab and its key rotation."""
    use_page_filters(deps)
    app.add_route(f"{ADMIN}/consumer-info", ConsumerInfoPage(deps))
    app.add_route(f"{ADMIN}/consumer-info/rotate", RotateAction(deps))
