"""The Consumers tab: the list, add by hand, add by URL (fetch the other application's
consumer info, review, confirm), edit with the recent history and the failure history
(refused signed requests, by problem, and a chart of accepted vs refused per hour), reset
the shared secret, and remove. RSA keys under the recommended size are flagged wherever a
consumer is shown (services.oauth.signatures.rsa_key_warning)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import falcon
import redis

from oauthledger.events.state import UserState
from oauthledger.services import consumers as svc
from oauthledger.services import remote_fetch
from oauthledger.services.deps import Deps
from oauthledger.services.errors import Conflict, NotFound, ValidationError
from oauthledger.services.failures import failure_history
from oauthledger.services.http.context import meta
from oauthledger.services.http.dance import human_duration
from oauthledger.services.http.pages.base import (
    ADMIN,
    Page,
    RemoveAction,
    admin_session,
    form_lists,
    notice,
    see_other,
    use_page_filters,
)
from oauthledger.services.oauth.signatures import METHODS, rsa_key_warning
from oauthledger.services.sessions import Session

CONSUMER_FLAGS = ("three_legged", "allow_impersonation", "allow_oauth10")
# Refused requests listed on the consumer's page (the JSON API and the CLI give all).
FAILURES_SHOWN = 50
# The chart (inline SVG: the CSP allows no inline style, SVG presentation attributes
# are not styles): one bar per hour, accepted below refused.
CHART_BAR, CHART_GAP, CHART_HEIGHT = 18, 4, 120

log = logging.getLogger(__name__)


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


def _key_warning(state: Any) -> str | None:
    """NIST SP 800-131A: the warning for an RSA key under 2048 bits, or None."""
    return rsa_key_warning(state.public_key) if state.public_key else None


def _add_form(page: Page, resp: falcon.Response, user: UserState, sess: Session,
              values: dict[str, Any], errors: dict[str, str], status: int = 200,
              fetched: Any = None) -> None:
    """The add-consumer form (by hand, after a refused POST, or filled in by a fetch):
    a new consumer has no history and no tokens yet."""
    page.page(resp, "admin_consumer_form.html", user, sess, status=status, tab="consumers",
              mode="add", values=values, errors=errors, methods=METHODS, fetched=fetched,
              fetched_key_warning=_key_warning(fetched) if fetched else None,
              history=[], outstanding=0)


class ConsumersPage(Page):
    """GET the Consumers tab: every consumer with its flags and outstanding tokens."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        states = svc.list_consumers(self.deps.ledger)
        counts = svc.outstanding_tokens(self.deps.ledger, [s.key for s in states])
        try:
            unattributed: int | None = failure_history(self.deps).unattributed_last_day()
        except redis.RedisError:
            unattributed = None  # operational data: the list shows without it
        self.page(resp, "admin_consumers.html", *who, tab="consumers", consumers=states,
                  counts=counts, key_warnings={s.key: _key_warning(s) for s in states},
                  notice=notice(req), unattributed=unattributed)


class ConsumerAddPage(Page):
    """GET the add-by-hand form; POST registers (also the confirm step of add-by-URL)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        _add_form(self, resp, *who, _empty_consumer(), {})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        multi = form_lists(req)
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
                  tab="consumers", consumer=state, secret=secret,
                  key_warning=_key_warning(state))


class ConsumerFetchPage(Page):
    """GET the add-by-URL form; POST fetches the other application's consumer info and
    shows the add form filled in with it, to review and confirm."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
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
            info = remote_fetch.fetch_consumer_info(
                base_url, remote_fetch.policy(self.deps.settings, req.env))
        except ValidationError as exc:
            self.page(resp, "admin_consumer_fetch.html", user, sess, status=422,
                      tab="consumers", base_url=base_url, errors=exc.fields)
            return
        values = {**_empty_consumer(), "key": info.key, "name": info.name,
                  "description": info.description, "public_key": info.public_key,
                  "callback_url": info.callback_url or ""}
        _add_form(self, resp, user, sess, values, {}, fetched=info)


def hour_label(start: float) -> str:
    """``14:00`` (UTC) for an hour's start."""
    return time.strftime("%H:00", time.gmtime(start))


def failure_chart(hours: list[dict[str, Any]]) -> dict[str, Any]:
    """Bar geometry for the chart of accepted vs refused requests per hour (oldest
    first): each hour a stacked bar scaled to the busiest hour; a non-zero count is at
    least one unit high so that a lone refusal still shows."""
    peak = max((h["accepted"] + h["refused"] for h in hours), default=0)
    bars = []
    for i, h in enumerate(hours):
        def height(n: int) -> int:
            return 0 if n == 0 or peak == 0 else max(1, round(n * CHART_HEIGHT / peak))

        acc, ref = height(h["accepted"]), height(h["refused"])
        x = i * (CHART_BAR + CHART_GAP)
        bars.append({**h, "label": hour_label(h["start"]), "x": x,
                     "accepted_y": CHART_HEIGHT - acc, "accepted_h": acc,
                     "refused_y": CHART_HEIGHT - acc - ref, "refused_h": ref,
                     "tick": i % 6 == 0 or i == len(hours) - 1,
                     # The last label ends at its bar's right edge, inside the chart.
                     "anchor": "end" if i == len(hours) - 1 else "start",
                     "text_x": x + CHART_BAR if i == len(hours) - 1 else x})
    return {"bars": bars, "peak": peak, "bar": CHART_BAR, "height": CHART_HEIGHT,
            "width": len(hours) * (CHART_BAR + CHART_GAP)}


def failures_view(deps: Deps, key: str) -> dict[str, Any]:
    """The consumer's failure history for its page, or ``{"unavailable": reason}``
    when Redis cannot be read (the page shows the rest all the same)."""
    try:
        report = failure_history(deps).consumer_report(key)
    except redis.RedisError as exc:
        log.warning("failure history of %r not read (Redis: %s)", key, exc)
        return {"unavailable": "Redis cannot be reached, so the failure history cannot "
                               "be read now."}
    report["shown"] = [{**e, "at": _at(e.get("time"))}
                       for e in report["failures"][:FAILURES_SHOWN]]
    for group in report["byProblem"]:
        group["at"] = _at(group["latest"])
    report["chart"] = failure_chart(report["hours"])
    report["retention"] = human_duration(report["keeps"]["retentionSeconds"])
    return report


def _at(ts: object) -> str:
    """A refusal's time for people: UTC, to the second."""
    if not isinstance(ts, int | float):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _edit_form(page: Page, resp: falcon.Response, user: UserState, sess: Session, key: str,
               values: dict[str, Any], errors: dict[str, str], status: int = 200,
               notice: str | None = None) -> None:
    """The consumer's page: its settings to edit, its history, the secret reset and the
    remove buttons."""
    state = svc.load_consumer(page.deps.ledger, key)
    page.page(resp, "admin_consumer_form.html", user, sess, status=status,
              tab="consumers", mode="edit", values=values, errors=errors,
              methods=METHODS, fetched=None, consumer=state, notice=notice,
              key_warning=_key_warning(state),
              history=svc.consumer_history(page.deps.ledger, key, limit=20),
              outstanding=svc.outstanding_tokens(page.deps.ledger, [key])[key],
              failures=failures_view(page.deps, key))


class ConsumerEditPage(Page):
    """GET ?key=: the consumer's settings (editable, key fixed), its recent history from
    the log and the remove button; POST saves."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = admin_session(req, resp, self.deps)
        if who is None:
            return
        key = req.get_param("key") or ""
        try:
            state = svc.load_consumer(self.deps.ledger, key)
        except NotFound:
            self.not_found(resp, *who, "consumer")
            return
        _edit_form(self, resp, *who, key, _consumer_values(state), {}, notice=notice(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        multi = form_lists(req)
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
            _edit_form(self, resp, user, sess, key, values, exc.fields, status=422)
            return
        if secret is not None:
            state = svc.load_consumer(self.deps.ledger, key)
            self.page(resp, "admin_consumer_created.html", user, sess, tab="consumers",
                      consumer=state, secret=secret, updated=True,
                      key_warning=_key_warning(state))
            return
        raise see_other(f"{ADMIN}/consumers/edit", key=key, done="consumer-updated")


class ConsumerSecretResetAction(Page):
    """POST key: replace the consumer's shared secret with a generated one and show it,
    once, on the page this POST answers (never again, never in a redirect)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        posted = self.admin_post(req, resp)
        if posted is None:
            return
        user, sess, data = posted
        key = data.get("key", "")
        try:
            state, secret = svc.reset_secret(self.deps.ledger, self.deps.sealer, key,
                                             meta(req, user.name))
        except NotFound:
            self.not_found(resp, user, sess, "consumer")
            return
        except ValidationError as exc:
            # The consumer has no shared secret (the page offers no reset then; another
            # admin changed it meanwhile).
            state = svc.load_consumer(self.deps.ledger, key)
            _edit_form(self, resp, user, sess, key, _consumer_values(state), exc.fields,
                       status=422)
            return
        self.page(resp, "admin_consumer_created.html", user, sess, tab="consumers",
                  consumer=state, secret=secret, reset=True)


class ConsumerRemoveAction(RemoveAction):
    """POST key: remove the consumer and revoke all its grants in one commit."""

    field, noun, back, done = "key", "consumer", ADMIN, "consumer-removed"

    def remove(self, ident: str, event_meta: Mapping[str, Any]) -> object:
        """:func:`oauthledger.services.consumers.remove_consumer`."""
        return svc.remove_consumer(self.deps.ledger, ident, event_meta)


def add_routes(app: falcon.App, deps: Deps) -> None:
    """Mount the Consumers tab (the admin landing page) and its actions."""
    use_page_filters(deps)
    routes: list[tuple[str, Callable[[Deps], Page]]] = [
        (ADMIN, ConsumersPage),
        (f"{ADMIN}/consumers/add", ConsumerAddPage),
        (f"{ADMIN}/consumers/fetch", ConsumerFetchPage),
        (f"{ADMIN}/consumers/edit", ConsumerEditPage),
        (f"{ADMIN}/consumers/reset-secret", ConsumerSecretResetAction),
        (f"{ADMIN}/consumers/remove", ConsumerRemoveAction),
    ]
    for path, cls in routes:
        app.add_route(path, cls(deps))
