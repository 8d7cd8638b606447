"""The application-links manifest (services/applinks_manifest.py, docs/oauth.md "Server
info and the application-links manifest"): ours is built and read back, another
application's is read from XML or JSON and refused when it is not one, and
fetch_manifest's two kinds of failure — a refused address raises, an application without
a manifest is None. The fetches go to real HTTP servers on loopback in threads."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import pytest

from oauthledger.events.state import InstallationState
from oauthledger.services import applinks_manifest as am
from oauthledger.services.errors import ValidationError
from oauthledger.services.remote_fetch import FetchPolicy

PATH = "/rest/applinks/1.0/manifest"
INSTALLATION = InstallationState(key="oauthledger:123456789", name="Ledger & Co <test>",
                                 description="", public_key="", private_key_sealed="")
VERSION = am.ProductVersion(text="2.5.1", numbers=(2, 5, 1), build_number=2005001,
                            build_date=dt.datetime(2024, 5, 1, tzinfo=dt.UTC), scm_info="")

JIRA_XML = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<manifest>
  <id>144880e9-a353-312f-9412-ed028e8166fa</id>
  <name>Jira</name>
  <typeId>jira</typeId>
  <version>9.12.2</version>
  <buildNumber>9120002</buildNumber>
  <applinksVersion>9.1.4</applinksVersion>
  <inboundAuthenticationTypes>com.atlassian.applinks.api.auth.types.BasicAuthenticationProvider</inboundAuthenticationTypes>
  <inboundAuthenticationTypes>com.atlassian.applinks.api.auth.types.OAuthAuthenticationProvider</inboundAuthenticationTypes>
  <outboundAuthenticationTypes>com.atlassian.applinks.api.auth.types.OAuthAuthenticationProvider</outboundAuthenticationTypes>
  <publicSignup>true</publicSignup>
  <url>https://jira.example.com/jira/</url>
  <iconUrl>https://jira.example.com/jira/favicon.ico</iconUrl>
</manifest>"""


# -- ours ---------------------------------------------------------------------------------


def test_our_manifest_says_who_we_are_and_that_we_speak_oauth() -> None:
    manifest = am.build_manifest(INSTALLATION, "https://ledger.example.com/", VERSION)
    assert manifest.id == str(uuid.uuid5(am._ID_NAMESPACE, INSTALLATION.key))
    assert manifest.name == INSTALLATION.name
    assert manifest.base_url == "https://ledger.example.com"
    assert (manifest.type_id, manifest.version, manifest.build_number) == \
        ("generic", "2.5.1", 2005001)
    assert manifest.speaks_oauth
    assert manifest.inbound_authentication_types == am.INBOUND
    assert manifest.outbound_authentication_types == (am.OAUTH,)
    assert manifest.public_signup is False


def test_the_id_depends_on_the_consumer_key_only() -> None:
    renamed = InstallationState(key=INSTALLATION.key, name="Other", description="d",
                                public_key="new", private_key_sealed="new")
    other = InstallationState(key="oauthledger:987654321", name=INSTALLATION.name,
                              description="", public_key="", private_key_sealed="")
    ids = {am.build_manifest(state, url, VERSION).id
           for state, url in ((INSTALLATION, "https://a.example"), (renamed, "http://b:8080"))}
    assert ids == {am.manifest_id(INSTALLATION.key)}
    assert am.manifest_id(other.key) not in ids
    uuid.UUID(am.manifest_id(other.key))  # a UUID, as Atlassian application ids are


def test_our_xml_has_atlassians_shape_and_reads_back() -> None:
    manifest = am.build_manifest(INSTALLATION, "https://ledger.example.com", VERSION)
    xml = am.manifest_xml(manifest)
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<manifest>')
    assert "<name>Ledger &amp; Co &lt;test&gt;</name>" in xml  # escaped
    assert xml.count("<inboundAuthenticationTypes>") == 3
    assert f"<outboundAuthenticationTypes>{am.OAUTH}</outboundAuthenticationTypes>" in xml
    assert "<publicSignup>false</publicSignup>" in xml
    assert "<buildNumber>2005001</buildNumber>" in xml
    assert am.parse_manifest(xml.encode()) == manifest
    assert am.parse_manifest(json.dumps(manifest.view()).encode()) == manifest


# -- this installation's version ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "numbers"), [
    ("0.1.0", (0, 1, 0)), ("2.3", (2, 3, 0)), ("10", (10, 0, 0)), ("1.2.3.4", (1, 2, 3)),
    ("1.2.3rc1", (1, 2, 3)), ("1.2.dev4", (1, 2, 0)), ("dev", (0, 0, 0)), ("", (0, 0, 0)),
])
def test_version_numbers(text: str, numbers: tuple[int, int, int]) -> None:
    assert am.version_numbers(text) == numbers


def test_build_numbers_grow_with_the_version() -> None:
    versions = [(0, 1, 0), (0, 1, 9), (0, 2, 0), (1, 0, 0), (1, 999, 999), (2, 0, 0)]
    numbers = [am.build_number(v) for v in versions]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert am.build_number((9, 12, 2)) == 9012002


def test_the_version_is_the_installed_packages() -> None:
    version = am.product_version()
    assert version.text == metadata.version("oauthledger")
    assert version.numbers == am.version_numbers(version.text)
    assert version.build_number == am.build_number(version.numbers)
    assert version.build_date.tzinfo is not None


def test_times_are_iso_8601_as_jira_writes_them() -> None:
    moment = dt.datetime(2024, 5, 1, 14, 3, 4, 567891, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    text = am.atlassian_time(moment)
    assert text == "2024-05-01T12:03:04.567+0000"
    assert dt.datetime.fromisoformat(text) == moment.replace(microsecond=567000)
    assert am.atlassian_time(0) == "1970-01-01T00:00:00.000+0000"


# -- another application's ---------------------------------------------------------------------


def test_an_atlassian_manifest_is_read() -> None:
    manifest = am.parse_manifest(JIRA_XML)
    assert manifest == am.Manifest(
        id="144880e9-a353-312f-9412-ed028e8166fa", name="Jira", type_id="jira",
        version="9.12.2", base_url="https://jira.example.com/jira", build_number=9120002,
        applinks_version="9.1.4",
        inbound_authentication_types=(
            "com.atlassian.applinks.api.auth.types.BasicAuthenticationProvider", am.OAUTH),
        outbound_authentication_types=(am.OAUTH,), public_signup=True,
        icon_url="https://jira.example.com/jira/favicon.ico")
    assert manifest.speaks_oauth
    assert manifest.description == "Jira 9.12.2 (jira) at https://jira.example.com/jira"


def test_a_json_manifest_with_only_some_fields_is_read() -> None:
    body = json.dumps({"id": "de1eb390", "name": "Bridge", "typeId": "generic",
                       "inboundAuthenticationTypes": [am.OAUTH], "publicSignup": False,
                       "url": "http://bridge.example:5065/jira"}).encode()
    manifest = am.parse_manifest(b"\n " + body)
    assert (manifest.name, manifest.version, manifest.build_number) == ("Bridge", None, None)
    assert manifest.speaks_oauth and manifest.outbound_authentication_types == ()
    assert manifest.description == "Bridge (generic) at http://bridge.example:5065/jira"


def test_a_manifest_without_oauth_says_so() -> None:
    body = JIRA_XML.replace(am.OAUTH.encode(), b"com.example.Other")
    assert not am.parse_manifest(body).speaks_oauth


@pytest.mark.parametrize(("body", "why"), [
    (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x "boom">]><manifest><id>1</id>'
     b"<name>&x;</name></manifest>", "DTD"),
    (b'<!ENTITY x SYSTEM "file:///etc/passwd"><manifest/>', "DTD"),
    (b"<consumer><key>k</key></consumer>", "expected a <manifest>"),
    (b"<manifest><name>No id</name></manifest>", "no id"),
    (b"<manifest><id>1</id></manifest>", "no name"),
    (b"<manifest><id>1</id><name>  </name></manifest>", "no name"),
    (b"<manifest><id>1</id><name>a\x1bb</name></manifest>", "not XML"),
    (b"<manifest><id>1</id><name>a&#x9;b</name></manifest>", "control characters"),
    (b"<manifest><id>1</id><name>" + b"n" * 256 + b"</name></manifest>", "longer than"),
    (b"<manifest><id>1</id><name>x</name><url>javascript:alert(1)</url></manifest>",
     "not an http(s) URL"),
    (b"<manifest><id>1</id><name>x</name>"
     + b"<inboundAuthenticationTypes>t</inboundAuthenticationTypes>" * 21 + b"</manifest>",
     "more than 20"),
    (b"<html><body>Not found</body></html>", "expected a <manifest>"),
    (b"not a document", "not XML"),
    (b'{"id": "1", "name": ["x"]}', "name is not text"),
    (b'{"id": "1", "name": "x", "inboundAuthenticationTypes": {"a": 1}}', "not a list"),
    (b"[1, 2]", "not an object"),
    (b"{oops", "not JSON"),
    (b"", "not XML"),
])
def test_what_is_not_a_usable_manifest_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(am.ManifestError, match=re.escape(why)):
        am.parse_manifest(body)


def test_an_icon_that_is_no_web_address_is_dropped() -> None:
    body = JIRA_XML.replace(b"https://jira.example.com/jira/favicon.ico",
                            b"javascript:alert(1)")
    assert am.parse_manifest(body).icon_url is None


# -- the base URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "url"), [
    ("https://jira.example.com", f"https://jira.example.com{PATH}"),
    ("https://jira.example.com/", f"https://jira.example.com{PATH}"),
    (" http://jira.example.com:8080/jira/ ", f"http://jira.example.com:8080/jira{PATH}"),
    (f"https://jira.example.com/jira{PATH}", f"https://jira.example.com/jira{PATH}"),
    ("http://[2001:db8::1]:8080", f"http://[2001:db8::1]:8080{PATH}"),
])
def test_the_manifest_url_is_under_the_base_url(base: str, url: str) -> None:
    assert am.manifest_url(base) == url


@pytest.mark.parametrize(("base", "says"), [
    ("", "is required"),
    ("jira.example.com", "http:// or https://"),
    ("ftp://jira.example.com/", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("https://admin:pw@jira.example.com/", "user name or password"),
    ("https://jira.example.com/?next=/secure", "query or a fragment"),
    ("https://jira.example.com/#x", "query or a fragment"),
    ("https://jira.example.com/a/../admin", "context path"),
    ("https://jira.example.com/%2e%2e/admin", "context path"),
    ("https://jira.example.com/a;b", "context path"),
    ("https://jira.example.com:99999/", "host and port"),
    ("https://jira.example.com/a b", "spaces"),
    ("https://jira.example.com/\\x", "backslashes"),
    ("https://jira.example.com/" + "a" * 2001, "at most 2000"),
])
def test_base_urls_that_could_aim_elsewhere_are_refused(base: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        am.manifest_url(base)
    assert says in caught.value.fields["base_url"]


# -- fetching ------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Site:
    """A real HTTP server on loopback in a thread: ``replies`` maps a path to its reply
    (others: 404); every request's path and Accept header are recorded."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append((self.path, self.headers.get("Accept")))
                reply = outer.replies.get(self.path, Reply(404, b"<html>no</html>"))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site({})
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


LOOPBACK_OK = FetchPolicy(allow_private=True)


def test_a_manifest_is_fetched_from_the_manifest_path_only(site: Site) -> None:
    site.replies[f"/jira{PATH}"] = Reply(body=JIRA_XML)
    manifest = am.fetch_manifest(site.url + "/jira/", LOOPBACK_OK)
    assert manifest is not None and manifest.name == "Jira"
    assert site.paths == [f"/jira{PATH}"]
    assert "application/xml" in (site.requests[0][1] or "")


def test_a_json_answer_is_read_too(site: Site) -> None:
    site.replies[PATH] = Reply(body=b'{"id": "x1", "name": "Bridge"}',
                               headers={"Content-Type": "application/json"})
    manifest = am.fetch_manifest(site.url, LOOPBACK_OK)
    assert manifest is not None and manifest.name == "Bridge"


@pytest.mark.parametrize("reply", [
    Reply(404, b"<html>Not Found</html>"),
    Reply(500, b"boom"),
    Reply(401, b"", {"WWW-Authenticate": "Basic"}),
    Reply(200, b"<consumer><key>k</key></consumer>"),
    Reply(200, b"<!DOCTYPE manifest><manifest><id>1</id><name>x</name></manifest>"),
    Reply(200, b"not a manifest at all"),
    Reply(200, b"<manifest><id>1</id><name>" + b"x" * 70000 + b"</name></manifest>"),
    Reply(302, b"", {"Location": "/somewhere/else"}),
    Reply(302, b""),
])
def test_an_application_without_a_usable_manifest_is_none(site: Site, reply: Reply,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    site.replies[PATH] = reply
    with caplog.at_level(logging.INFO, logger="oauthledger.services.applinks_manifest"):
        assert am.fetch_manifest(site.url, LOOPBACK_OK) is None
    assert site.paths == [PATH]
    assert "manifest from" in caplog.text  # the detail is in the log


def test_redirects_to_a_manifest_path_are_followed_each_one_vetted(site: Site) -> None:
    site.replies[PATH] = Reply(301, b"", {"Location": f"/ctx{PATH}"})
    site.replies[f"/ctx{PATH}"] = Reply(302, b"", {"Location": f"{site.url}/new{PATH}"})
    site.replies[f"/new{PATH}"] = Reply(body=JIRA_XML)
    manifest = am.fetch_manifest(site.url, LOOPBACK_OK)
    assert manifest is not None and manifest.id.startswith("144880e9")
    assert site.paths == [PATH, f"/ctx{PATH}", f"/new{PATH}"]


def test_a_redirect_to_a_refused_address_is_not_followed(site: Site) -> None:
    # The base URL was allowed; where it sends us is the other application's choice, so
    # a hop to the metadata service is simply not a manifest.
    site.replies[PATH] = Reply(302, b"", {"Location": f"http://169.254.169.254{PATH}"})
    assert am.fetch_manifest(site.url, LOOPBACK_OK) is None
    assert site.paths == [PATH]


def test_a_redirect_loop_ends(site: Site) -> None:
    site.replies[PATH] = Reply(302, b"", {"Location": PATH})
    assert am.fetch_manifest(site.url, LOOPBACK_OK) is None
    assert len(site.paths) == LOOPBACK_OK.max_redirects + 1


def test_an_address_that_is_not_allowed_is_refused_and_nothing_is_sent(site: Site) -> None:
    site.replies[PATH] = Reply(body=JIRA_XML)
    port = site.server.server_address[1]
    for base in (site.url, f"http://0x7f000001:{port}", f"http://[::ffff:127.0.0.1]:{port}",
                 "http://169.254.169.254", "http://10.0.0.1:8080/jira"):
        with pytest.raises(ValidationError) as caught:
            am.fetch_manifest(base, FetchPolicy())
        message = caught.value.fields["base_url"]
        assert message.startswith("could not fetch the application links manifest from ")
        assert message.endswith(": the address is not allowed"), message
    assert site.requests == []


def test_this_server_is_refused(site: Site) -> None:
    port = site.server.server_address[1]
    own = FetchPolicy(allow_private=True, own_origins=frozenset({("127.0.0.1", port)}))
    with pytest.raises(ValidationError) as caught:
        am.fetch_manifest(site.url, own)
    assert caught.value.fields["base_url"].endswith("that is this server itself")
    assert site.requests == []


def test_an_application_that_cannot_be_reached_is_none() -> None:
    # A port nothing listens on, and a name that does not resolve.
    gone = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = gone.server_address[1]
    gone.server_close()
    assert am.fetch_manifest(f"http://127.0.0.1:{port}", LOOPBACK_OK) is None

    def nowhere(host: str, port: int) -> list[str]:
        raise OSError(f"cannot resolve {host}")

    assert am.fetch_manifest("https://jira.invalid", FetchPolicy(resolver=nowhere)) is None


def test_a_bad_base_url_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError) as caught:
        am.fetch_manifest("http://jira.example.com/?x=1", LOOPBACK_OK)
    assert "query" in caught.value.fields["base_url"]
