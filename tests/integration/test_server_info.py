"""What this installation tells Atlassian clients and applications about itself, through
the Falcon app on the embedded dependencies (docs/oauth.md, "Server info and the
application-links manifest"): /rest/api/2/serverInfo with every field jira-python and
other Atlassian clients read, and /rest/applinks/1.0/manifest in XML and JSON, its id
stable across restarts, renames and key rotation."""

from __future__ import annotations

import datetime as dt
import re
from importlib import metadata
from pathlib import Path

import falcon.testing

from oauthledger.services import installation as inst
from oauthledger.services.applinks_manifest import (
    INBOUND,
    OAUTH,
    build_manifest,
    build_number,
    manifest_id,
    parse_manifest,
    version_numbers,
)
from oauthledger.services.deps import Deps
from oauthledger.services.http.app import create_app
from tests.conftest import embedded_deps_in

SERVER_INFO = "/rest/api/2/serverInfo"
MANIFEST = "/rest/applinks/1.0/manifest"
PREFIX = "http://falconframework.org"  # falcon.testing's default scheme and host
META = {"actor": "test"}
# Jira's form of an ISO 8601 moment: milliseconds and a ±hhmm offset.
JIRA_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}")


def client(deps: Deps) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(deps))


def moment(text: str) -> dt.datetime:
    assert JIRA_TIME.fullmatch(text), text
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None
    return parsed


# -- serverInfo -----------------------------------------------------------------------------


def test_server_info_has_every_field_atlassian_clients_read(embedded_deps: Deps) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    resp = client(embedded_deps).simulate_get(SERVER_INFO)
    after = dt.datetime.now(dt.UTC)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    info = resp.json
    version = metadata.version("oauthledger")
    assert info["baseUrl"] == PREFIX
    assert info["version"] == version
    assert info["versionNumbers"] == list(version_numbers(version))
    assert all(type(n) is int for n in info["versionNumbers"])
    assert len(info["versionNumbers"]) == 3
    assert info["deploymentType"] == "Server"
    assert type(info["buildNumber"]) is int
    assert info["buildNumber"] == build_number(version_numbers(version))
    assert moment(info["buildDate"]) <= after
    # serverTime is now: between the moments taken around the request (it is written
    # to the millisecond, hence the whole second before).
    assert before <= moment(info["serverTime"]) <= after
    assert isinstance(info["scmInfo"], str)
    assert info["serverTitle"] == inst.DEFAULT_NAME


def test_server_info_uses_the_configured_base_url_and_the_installations_name(
        tmp_path: Path) -> None:
    with embedded_deps_in(tmp_path, BASE_URL="https://ledger.example.com/") as deps:
        inst.update_installation(deps.ledger, deps.sealer, "Ledger HQ", "", META)
        info = client(deps).simulate_get(SERVER_INFO).json
        assert info["baseUrl"] == "https://ledger.example.com"
        assert info["serverTitle"] == "Ledger HQ"


def test_server_info_is_public_and_writes_nothing(embedded_deps: Deps) -> None:
    """jira-python signs every request, serverInfo included: a signature, even one that
    would be refused on a protected resource, does not stand in the way. The anonymous
    GET does not generate the installation's identity either."""
    app = client(embedded_deps)
    header = 'OAuth oauth_consumer_key="nobody", oauth_signature="x"'
    resp = app.simulate_get(SERVER_INFO, headers={"Authorization": header})
    assert resp.status_code == 200
    assert resp.json["versionNumbers"] == list(version_numbers(metadata.version("oauthledger")))
    assert inst.load_installation(embedded_deps.ledger) is None
    # The same header on a protected resource is refused: the difference is the route.
    assert app.simulate_get("/rest/api/2/myself", headers={"Authorization": header}
                            ).status_code in (400, 401)


# -- the application-links manifest ------------------------------------------------------------


def test_the_manifest_is_xml_by_default(embedded_deps: Deps) -> None:
    app = client(embedded_deps)
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/xml"},
                    {"Accept": "text/xml"}, {"Accept": "text/html, application/json;q=0.5"
                                                       ", application/xml;q=0.9"}):
        resp = app.simulate_get(MANIFEST, headers=headers)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/xml; charset=utf-8", headers
        assert resp.headers["Vary"] == "Accept"
        assert resp.text.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    state = inst.load_installation(embedded_deps.ledger)
    assert state is not None  # generated on first use, as for the consumer info
    manifest = parse_manifest(resp.content)
    assert manifest == build_manifest(state, PREFIX)
    assert manifest.id == manifest_id(state.key)
    assert (manifest.name, manifest.base_url, manifest.type_id) == \
        (state.name, PREFIX, "generic")
    assert manifest.version == metadata.version("oauthledger")
    assert manifest.inbound_authentication_types == INBOUND
    assert manifest.outbound_authentication_types == (OAUTH,)
    assert manifest.speaks_oauth and manifest.public_signup is False
    assert "<inboundAuthenticationTypes>" + OAUTH + "</inboundAuthenticationTypes>" \
        in resp.text


def test_the_manifest_is_json_when_asked_for(embedded_deps: Deps) -> None:
    app = client(embedded_deps)
    xml = app.simulate_get(MANIFEST).content
    for accept in ("application/json", "application/xml;q=0.5, application/json"):
        resp = app.simulate_get(MANIFEST, headers={"Accept": accept})
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("application/json"), accept
        body = resp.json
        assert body["inboundAuthenticationTypes"] == list(INBOUND)
        assert body["outboundAuthenticationTypes"] == [OAUTH]
        assert body["publicSignup"] is False
        assert type(body["buildNumber"]) is int
        assert parse_manifest(resp.content) == parse_manifest(xml)


def test_the_manifest_id_survives_restarts_renames_and_key_rotation(tmp_path: Path) -> None:
    with embedded_deps_in(tmp_path) as deps:
        first = parse_manifest(client(deps).simulate_get(MANIFEST).content)
    # A restart: a new process's app on the same data directory.
    with embedded_deps_in(tmp_path, BASE_URL="https://ledger.example.com") as deps:
        app = client(deps)
        assert parse_manifest(app.simulate_get(MANIFEST).content).id == first.id
        inst.update_installation(deps.ledger, deps.sealer, "Renamed", "now described", META)
        inst.rotate_key_pair(deps.ledger, deps.sealer, META)
        later = parse_manifest(app.simulate_get(MANIFEST).content)
        assert later.id == first.id
        assert (later.name, later.base_url) == ("Renamed", "https://ledger.example.com")
    # Another installation (another data directory) has another id.
    with embedded_deps_in(tmp_path / "other") as deps:
        assert parse_manifest(client(deps).simulate_get(MANIFEST).content).id != first.id
