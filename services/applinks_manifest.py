"""What this installation tells other applications about itself, and what they tell us:
the application-links manifest (``/rest/applinks/1.0/manifest``) and the version facts
that ``/rest/api/2/serverInfo`` shares with it (docs/oauth.md, "Server info and the
application-links manifest").

Interface other modules use (keep it):

    fetch_manifest(base_url: str, policy: FetchPolicy) -> Manifest | None
        GET <base_url>/rest/applinks/1.0/manifest through remote_fetch.send (vetted);
        None when the application publishes none or it cannot be read.
    Manifest(id, name, type_id, version, base_url, ...)  # frozen dataclass

Our own manifest is :func:`build_manifest` (rendered by :func:`manifest_xml` or
:meth:`Manifest.view`); another application's is read by :func:`parse_manifest`, which
takes Atlassian's XML and the JSON some applications answer with instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from oauthledger.events.state import InstallationState
from oauthledger.services import remote_fetch
from oauthledger.services.errors import ValidationError

log = logging.getLogger(__name__)

MANIFEST_PATH = "/rest/applinks/1.0/manifest"
DISTRIBUTION = "oauthledger"

# Atlassian's application types are its products ("jira", "confluence", ...); any other
# application is "generic", the type Atlassian applications link to over OAuth without
# expecting product-specific resources.
TYPE_ID = "generic"
# The applinks manifest format this document follows. Atlassian's own integration of a
# non-Atlassian application (Bitbucket's Jenkins plugin) publishes this version with
# OAuth as its only inbound type, as we do.
APPLINKS_VERSION = "7.2.0"

# The AuthenticationProvider class names Atlassian applications list in a manifest.
OAUTH = "com.atlassian.applinks.api.auth.types.OAuthAuthenticationProvider"
TWO_LEGGED_OAUTH = "com.atlassian.applinks.api.auth.types.TwoLeggedOAuthAuthenticationProvider"
TWO_LEGGED_OAUTH_IMPERSONATION = (
    "com.atlassian.applinks.api.auth.types.TwoLeggedOAuthWithImpersonationAuthenticationProvider")
# Inbound: signed requests with an access token, two-legged ones, and two-legged ones
# that name a user (docs/oauth.md, "Two-legged requests and impersonation").
INBOUND = (OAUTH, TWO_LEGGED_OAUTH, TWO_LEGGED_OAUTH_IMPERSONATION)
# Outbound: as a consumer we only ever call a provider with a user's access token
# (services/connections.py).
OUTBOUND = (OAUTH,)

# A fixed namespace for the manifest id: uuid5(namespace, consumer key).
_ID_NAMESPACE = uuid.UUID("476e1859-d865-4ab9-842f-6d170f4f4918")

# What another application's manifest may hold; beyond this it is not a manifest we use.
MAX_ID = 100
MAX_NAME = 255
MAX_SHORT = 100
MAX_URL = 2000
MAX_TYPES = 20
MAX_TYPE_NAME = 200
FIELD = "base_url"
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
ACCEPT = "application/xml, text/xml;q=0.9, application/json;q=0.8"


# -- this installation's version -----------------------------------------------------------


@dataclass(frozen=True)
class ProductVersion:
    """The version facts serverInfo and the manifest publish."""

    text: str  # "0.1.0", from the installed package's metadata
    numbers: tuple[int, int, int]
    build_number: int
    build_date: dt.datetime  # aware, UTC
    scm_info: str  # the commit it was installed from, when the installer recorded one


def version_numbers(text: str) -> tuple[int, int, int]:
    """The leading numeric release parts of a version, three of them as Jira gives them:
    "0.1.0" -> (0, 1, 0), "2.3" -> (2, 3, 0), "1.2.3rc1" -> (1, 2, 3), "dev" -> (0, 0, 0)."""
    found = re.match(r"\d+(?:\.\d+)*", text.strip())
    parts = [int(p) for p in found.group(0).split(".")] if found else []
    parts = (parts + [0, 0, 0])[:3]
    return parts[0], parts[1], parts[2]


def build_number(numbers: tuple[int, int, int]) -> int:
    """An integer that grows with the version, as Atlassian numbers builds:
    major * 1,000,000 + minor * 1,000 + patch (minor and patch capped at 999)."""
    major, minor, patch = numbers
    return major * 1_000_000 + min(minor, 999) * 1_000 + min(patch, 999)


def _metadata_time(dist: metadata.Distribution) -> float | None:
    # When the package was built or installed: the distribution's METADATA file is
    # written then. An installation that kept no file list has no such date.
    for file in dist.files or ():
        if file.name == "METADATA":
            try:
                return Path(str(file.locate())).stat().st_mtime
            except OSError:
                return None
    return None


def _scm_info(dist: metadata.Distribution) -> str:
    # PEP 610: an installation from a VCS records the commit in direct_url.json.
    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return ""
    commit = (info.get("vcs_info") or {}).get("commit_id") if isinstance(info, dict) else None
    return str(commit) if commit else ""


@lru_cache(maxsize=1)
def product_version() -> ProductVersion:
    """This installation's version, from the installed package's metadata (read once per
    process). Run from a source tree that was never installed, it is 0.0.0."""
    try:
        dist: metadata.Distribution | None = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        dist = None
    text = dist.version if dist is not None else "0.0.0"
    built = (_metadata_time(dist) if dist is not None else None) or Path(__file__).stat().st_mtime
    numbers = version_numbers(text)
    return ProductVersion(text=text, numbers=numbers, build_number=build_number(numbers),
                          build_date=dt.datetime.fromtimestamp(built, dt.UTC),
                          scm_info=_scm_info(dist) if dist is not None else "")


def atlassian_time(moment: dt.datetime | float) -> str:
    """A moment in Jira's ISO 8601 form: milliseconds and a ±hhmm offset, in UTC
    ("2024-05-01T12:00:00.000+0000"), which Java's, Python's and JavaScript's parsers
    all read."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


# -- the manifest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """An application-links manifest: who an application is and how it authenticates."""

    id: str
    name: str
    type_id: str
    version: str | None
    base_url: str
    build_number: int | None = None
    applinks_version: str | None = None
    inbound_authentication_types: tuple[str, ...] = ()
    outbound_authentication_types: tuple[str, ...] = ()
    public_signup: bool = False
    icon_url: str | None = None

    @property
    def speaks_oauth(self) -> bool:
        """Whether the application accepts OAuth 1.0a requests with a user's token."""
        return OAUTH in self.inbound_authentication_types

    @property
    def description(self) -> str:
        """One line for a provider's description: "Jira 9.12.2 (jira) at https://..."."""
        version = f" {self.version}" if self.version else ""
        at = f" at {self.base_url}" if self.base_url else ""
        return f"{self.name}{version} ({self.type_id}){at}"

    def view(self) -> dict[str, Any]:
        """The JSON form, with Atlassian's field names."""
        out: dict[str, Any] = {
            "id": self.id, "name": self.name, "typeId": self.type_id,
            "version": self.version, "buildNumber": self.build_number,
            "applinksVersion": self.applinks_version,
            "inboundAuthenticationTypes": list(self.inbound_authentication_types),
            "outboundAuthenticationTypes": list(self.outbound_authentication_types),
            "publicSignup": self.public_signup, "url": self.base_url,
        }
        if self.icon_url:
            out["iconUrl"] = self.icon_url
        return out


def manifest_id(consumer_key: str) -> str:
    """The installation's application id: a UUID derived from its consumer-info key,
    which never changes (renaming and key rotation keep it), so the id is the same
    across restarts and front ends."""
    return str(uuid.uuid5(_ID_NAMESPACE, consumer_key))


def build_manifest(installation: InstallationState, base_url: str,
                   version: ProductVersion | None = None) -> Manifest:
    """This installation's manifest: named as on the Consumer Info tab, at ``base_url``
    (OAUTHLEDGER_BASE_URL or the URL the request came to)."""
    version = version or product_version()
    return Manifest(id=manifest_id(installation.key), name=installation.name,
                    type_id=TYPE_ID, version=version.text, base_url=base_url.rstrip("/"),
                    build_number=version.build_number, applinks_version=APPLINKS_VERSION,
                    inbound_authentication_types=INBOUND,
                    outbound_authentication_types=OUTBOUND, public_signup=False)


def manifest_xml(manifest: Manifest) -> str:
    """The XML Atlassian applications publish: ``<manifest>`` with one element per field
    and one ``inboundAuthenticationTypes`` / ``outboundAuthenticationTypes`` element per
    type. ElementTree escapes the text."""
    root = ET.Element("manifest")

    def add(tag: str, value: object) -> None:
        if value is not None:
            ET.SubElement(root, tag).text = str(value)

    add("id", manifest.id)
    add("name", manifest.name)
    add("typeId", manifest.type_id)
    add("version", manifest.version)
    add("buildNumber", manifest.build_number)
    add("applinksVersion", manifest.applinks_version)
    for name in manifest.inbound_authentication_types:
        add("inboundAuthenticationTypes", name)
    for name in manifest.outbound_authentication_types:
        add("outboundAuthenticationTypes", name)
    add("publicSignup", "true" if manifest.public_signup else "false")
    add("url", manifest.base_url)
    add("iconUrl", manifest.icon_url)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            + ET.tostring(root, encoding="unicode"))


# -- reading another application's manifest --------------------------------------------------


class ManifestError(ValueError):
    """A document that is not a manifest this installation can use; the message says why
    (for the log: never shown to whoever added the provider)."""


def _text(value: object, field: str, limit: int, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ManifestError(f"no {field}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ManifestError(f"{field} is not text")
    text = str(value).strip()
    if len(text) > limit:
        raise ManifestError(f"{field} is longer than {limit} characters")
    if not text.isprintable():
        raise ManifestError(f"{field} contains control characters")
    return text


def _types(values: object, field: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise ManifestError(f"{field} is not a list")
    if len(values) > MAX_TYPES:
        raise ManifestError(f"{field} lists more than {MAX_TYPES} types")
    names = (_text(v, field, MAX_TYPE_NAME) for v in values)
    return tuple(dict.fromkeys(n for n in names if n))


def _number(value: object) -> int | None:
    # Atlassian's build numbers are integers; anything else is left out, not refused:
    # nothing here decides on it.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        return int(value.strip())
    return None


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _fields_from_xml(body: bytes) -> dict[str, Any]:
    # No DTD, ever: a manifest never needs one, and refusing it outright rules out entity
    # expansion and external entities without a hardened parser.
    upper = body.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise ManifestError("the document contains a DTD")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ManifestError(f"not XML ({exc})") from None
    if root.tag.rsplit("}", 1)[-1] != "manifest":
        raise ManifestError(f"expected a <manifest> document, got <{root.tag}>")
    fields: dict[str, Any] = {}
    for child in root:
        tag = child.tag.rsplit("}", 1)[-1]
        value = (child.text or "").strip()
        if tag in ("inboundAuthenticationTypes", "outboundAuthenticationTypes"):
            fields.setdefault(tag, []).append(value)
        else:
            fields.setdefault(tag, value)
    return fields


def _fields_from_json(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except ValueError as exc:
        raise ManifestError(f"not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ManifestError("the JSON document is not an object")
    return fields


def parse_manifest(body: bytes) -> Manifest:
    """Read another application's manifest: Atlassian's XML, or the same fields as a JSON
    object. Requires an id and a name; refuses DTDs, oversized or non-printable fields.
    Raises :class:`ManifestError`."""
    stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    fields = _fields_from_json(stripped) if stripped[:1] in (b"{", b"[") \
        else _fields_from_xml(stripped)
    url = _text(fields.get("url"), "url", MAX_URL) or ""
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise ManifestError("url is not an http(s) URL")
    icon = _text(fields.get("iconUrl") or fields.get("iconUri"), "iconUrl", MAX_URL)
    return Manifest(
        id=_text(fields.get("id"), "id", MAX_ID, required=True) or "",
        name=_text(fields.get("name"), "name", MAX_NAME, required=True) or "",
        type_id=_text(fields.get("typeId"), "typeId", MAX_SHORT) or "generic",
        version=_text(fields.get("version"), "version", MAX_SHORT),
        base_url=url.rstrip("/"),
        build_number=_number(fields.get("buildNumber")),
        applinks_version=_text(fields.get("applinksVersion"), "applinksVersion", MAX_SHORT),
        inbound_authentication_types=_types(fields.get("inboundAuthenticationTypes"),
                                            "inboundAuthenticationTypes"),
        outbound_authentication_types=_types(fields.get("outboundAuthenticationTypes"),
                                             "outboundAuthenticationTypes"),
        public_signup=_flag(fields.get("publicSignup")),
        icon_url=icon if icon and urlsplit(icon).scheme in ("http", "https") else None,
    )


# -- fetching it ------------------------------------------------------------------------------


def manifest_url(base_url: str) -> str:
    """The manifest URL under an application's base URL. The base URL must be a plain
    http(s) base URL — no user name or password, no query, no fragment, a context path of
    plain segments such as /jira — so that only the manifest path is ever asked for.
    Raises ValidationError on ``base_url`` saying what to change."""
    base = (base_url or "").strip()
    if not base:
        raise ValidationError({FIELD: "is required"})
    if len(base) > MAX_URL:
        raise ValidationError({FIELD: f"must be at most {MAX_URL} characters"})
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in base):
        raise ValidationError({FIELD: "must not contain spaces, control characters or "
                                      "backslashes"})
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError:
        raise ValidationError({FIELD: "is not a valid URL (check the host and port)"}) from None
    if parts.scheme not in ("http", "https") or not base.lower().startswith(
            parts.scheme + "://") or not parts.hostname or port == 0:
        raise ValidationError({FIELD: "must be an absolute http:// or https:// URL"})
    if "@" in parts.netloc:
        raise ValidationError({FIELD: "must not contain a user name or password"})
    if "?" in base or "#" in base:
        raise ValidationError({FIELD: "must not contain a query or a fragment: give the "
                                      "application's base URL"})
    path = parts.path.rstrip("/")
    if path.endswith(MANIFEST_PATH):
        path = path[: -len(MANIFEST_PATH)]
    if path and not all(_PATH_SEGMENT.fullmatch(s) for s in path.split("/")[1:]):
        raise ValidationError({FIELD: "the path may only be a context path such as /jira "
                                      "(letters, digits, - _ . ~ +; no dot segments)"})
    return f"{parts.scheme}://{parts.netloc}{path}{MANIFEST_PATH}"


def _redirect(current: str, location: str) -> str | None:
    """The next hop of a redirect, or None when it is not one we follow: it must stay a
    manifest URL, never leave https for http, and carry no credentials or query."""
    target = urljoin(current, location)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or parts.query \
            or parts.fragment or not parts.path.endswith(MANIFEST_PATH):
        return None
    if urlsplit(current).scheme == "https" and parts.scheme != "https":
        return None
    return target


def fetch_manifest(base_url: str, policy: remote_fetch.FetchPolicy) -> Manifest | None:
    """GET ``<base_url>/rest/applinks/1.0/manifest`` under ``policy`` — every hop through
    remote_fetch.send, vetted like the consumer-info fetch (allowed addresses only,
    resolved once, never this server, one deadline, a size cap) — and read it.

    Two kinds of failure, on purpose:

    - **Refused** (raises ValidationError on ``base_url``): a base URL of the wrong shape
      (the message says what to change), or an address the policy does not allow or that
      is this server ("could not fetch the application links manifest from HOST: the
      address is not allowed"). The administrator named that address, and anything added
      there would be refused on first use too, so it is said now rather than hidden
      behind "no manifest" — and nothing is sent.
    - **No manifest** (returns None): the application answered something other than a
      manifest (404, an error, a document we cannot read), could not be reached, was too
      slow, or redirected somewhere we do not follow (another path, https to http, a
      refused address). Many applications publish no manifest; the caller carries on
      without one. The detail goes to the log at INFO.
    """
    url = manifest_url(base_url)
    deadline = time.monotonic() + policy.timeout
    for hop in range(policy.max_redirects + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            log.info("manifest from %s: timed out", url)
            return None
        try:
            answer = remote_fetch.send("GET", url, {"Accept": ACCEPT}, b"",
                                       dataclasses.replace(policy, timeout=left))
        except remote_fetch.Unreachable as exc:
            if hop == 0 and exc.reason in (remote_fetch.NOT_ALLOWED, remote_fetch.IS_SELF):
                reason = remote_fetch.NOT_ALLOWED if exc.reason == remote_fetch.NOT_ALLOWED \
                    else "that is this server itself"
                log.info("manifest from %s refused: %s", url, exc.detail)
                raise ValidationError({FIELD: f"could not fetch the application links "
                                              f"manifest from {urlsplit(url).netloc}: "
                                              f"{reason}"}) from None
            log.info("manifest from %s not read: %s (%s)", url, exc.reason, exc.detail)
            return None
        if answer.status == 200:
            try:
                return parse_manifest(answer.body)
            except ManifestError as exc:
                log.info("manifest from %s not usable: %s", url, exc)
                return None
        location = answer.headers.get("location")
        if answer.status not in _REDIRECTS or not location:
            log.info("manifest from %s: HTTP %d", url, answer.status)
            return None
        following = _redirect(url, location)
        if following is None:
            log.info("manifest from %s: redirect to %r not followed", url, location[:200])
            return None
        url = following
    log.info("manifest from %s: more than %d redirects", base_url, policy.max_redirects)
    return None
