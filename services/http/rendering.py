"""HTML output: the Jinja2 templates, ``render`` and the security headers every response
carries (no framing, a strict CSP, no Referer, no caching of pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon
import jinja2

from oauthledger.services.deps import Deps

TEMPLATES = Path(__file__).with_name("templates")

# Pages must never be framed (clickjacking an approve button): both the legacy header
# and CSP frame-ancestors. No form-action: Chromium applies it to the redirect that
# carries the verifier to the consumer's callback.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def make_templates() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template (all output is escaped)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def templates(deps: Deps) -> jinja2.Environment:
    """The app's template environment (``create_app`` sets ``deps.templates``)."""
    if deps.templates is None:
        raise RuntimeError("deps.templates is unset: build the app with create_app(deps)")
    return deps.templates


def render(resp: falcon.Response, deps: Deps, template: str, status: int = 200,
           **context: Any) -> None:
    """Render an HTML page."""
    env = templates(deps)
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = env.get_template(template).render(**context)


def set_security_headers(resp: falcon.Response) -> None:
    """The headers every response carries; HTML pages are also never cached."""
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("Content-Security-Policy", CSP)
    # Authorize URLs carry the request token: never leak them in a Referer.
    resp.set_header("Referrer-Policy", "no-referrer")
    if resp.content_type and resp.content_type.startswith("text/html"):
        resp.set_header("Cache-Control", "no-store")
