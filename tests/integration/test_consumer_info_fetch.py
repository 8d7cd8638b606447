"""Adding a consumer by URL against real HTTP(S) servers in threads (services/remote_fetch.py,
docs/admin.md "Add by URL"): loopback is refused unless OAUTHLEDGER_FETCH_ALLOW_PRIVATE is
set; what goes wrong on the other side is told to the admin in generic words only (the
detail is in the log); redirects are vetted hop by hop; the connection goes to the address
that was vetted, with the name in Host and in TLS; and the server never fetches from
itself."""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import threading
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import falcon.testing
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from oauthledger.services import remote_fetch
from oauthledger.services.deps import Deps
from oauthledger.services.errors import ValidationError
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import pg_deps
from tests.integration.test_admin_api import ADMIN_PW, call
from tests.support import public_pem

INFO_PATH = "/plugins/servlet/oauth/consumer-info"
NO_INFO = "no valid consumer info there"
NOT_ALLOWED = "the address is not allowed"


def consumer_xml(key: str = "jira:1234567", pem: str | None = None) -> bytes:
    return (f"<consumer><key>{key}</key><name>Jira</name><publicKey>{pem or public_pem()}"
            f"</publicKey><description>ours</description></consumer>").encode()


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Site:
    """A real HTTP(S) server in a thread. ``answers`` maps a path to its answer (others:
    404); every request's path and Host header are recorded, and for TLS the SNI name."""

    def __init__(self, answers: dict[str, Answer] | None = None, host: str = "127.0.0.1",
                 port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[tuple[str, str | None]] = []
        self.sni: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append((self.path, self.headers.get("Host")))
                answer = outer.answers.get(self.path, Answer(404, b"not here"))
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _deps(pg_url, redis_client, key_layout, tmp_path: Path, **env: str) -> Iterator[Deps]:
    with pg_deps(pg_url, redis_client, key_layout, tmp_path, **env) as d:
        register_user(d.ledger, "root", ADMIN_PW, admin=True, meta={"actor": "test"})
        yield d


@pytest.fixture
def strict_deps(pg_url, redis_client, key_layout, tmp_path) -> Iterator[Deps]:
    """Deps with the default settings: private and loopback targets refused."""
    yield from _deps(pg_url, redis_client, key_layout, tmp_path)


@pytest.fixture
def deps(pg_url, redis_client, key_layout, tmp_path) -> Iterator[Deps]:
    """Deps with OAUTHLEDGER_FETCH_ALLOW_PRIVATE=1: the test servers are on loopback."""
    yield from _deps(pg_url, redis_client, key_layout, tmp_path, FETCH_ALLOW_PRIVATE="1")


@pytest.fixture
def client(deps) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(deps))


def fetch_via_api(client, base: str):  # noqa: ANN201 - a falcon test Result
    return call(client, "GET", "/remote-consumer-info", params={"baseUrl": base})


def refusal(client, base: str) -> str:
    resp = fetch_via_api(client, base)
    assert resp.status_code == 422, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    return resp.json["errors"]["baseUrl"]


def test_loopback_is_refused_by_default(strict_deps):
    client = falcon.testing.TestClient(create_app(strict_deps))
    with Site({INFO_PATH: Answer(body=consumer_xml())}) as site:
        message = refusal(client, site.url)
        assert message == f"could not fetch consumer info from 127.0.0.1:{site.port}: " \
                          f"{NOT_ALLOWED}"
        assert site.requests == []  # nothing was sent


def test_the_consumers_page_refuses_loopback_by_default(strict_deps):
    # The Consumers tab's add by URL (services/http/pages/consumers.py) goes through
    # remote_fetch as well: no request leaves for a loopback address.
    from tests.integration.test_admin_api_pages import ADMIN as PAGES
    from tests.integration.test_admin_api_pages import Browser

    client = falcon.testing.TestClient(create_app(strict_deps))
    browser = Browser(client, "root", ADMIN_PW)
    with Site({INFO_PATH: Answer(body=consumer_xml())}) as site:
        for base in (site.url, f"http://0x7f000001:{site.port}/",
                     f"http://[::ffff:127.0.0.1]:{site.port}/"):
            resp = browser.post(f"{PAGES}/consumers/fetch", {"base_url": base})
            assert resp.status_code == 422
            assert NOT_ALLOWED in resp.text
        assert site.requests == []


def test_fetched_when_the_setting_allows_private_targets(client):
    xml = client.simulate_get(INFO_PATH).text.encode()  # our own document, served elsewhere
    with Site({INFO_PATH: Answer(body=xml), f"/jira{INFO_PATH}": Answer(body=xml)}) as site:
        got = fetch_via_api(client, site.url + "/")
        assert got.status_code == 200, got.text
        info = call(client, "GET", "/consumer-info").json
        assert (got.json["key"], got.json["publicKey"]) == (info["key"], info["publicKey"])
        assert got.json["url"] == f"{site.url}{INFO_PATH}"
        # A context path is kept; the consumer-info path is always what is asked for.
        assert fetch_via_api(client, site.url + "/jira").status_code == 200
        assert fetch_via_api(client, f"{site.url}/jira{INFO_PATH}").status_code == 200
        assert site.requests == [(INFO_PATH, f"127.0.0.1:{site.port}"),
                                 (f"/jira{INFO_PATH}", f"127.0.0.1:{site.port}"),
                                 (f"/jira{INFO_PATH}", f"127.0.0.1:{site.port}")]


def test_the_admin_cannot_choose_another_path_on_the_target(client):
    with Site({"/secret": Answer(body=consumer_xml())}) as site:
        for base in (f"{site.url}/secret?", f"{site.url}/secret#", f"{site.url}/secret?x=",
                     f"{site.url}/a/../secret", f"{site.url}/secret%3f",
                     f"http://root:pw@127.0.0.1:{site.port}/secret"):
            message = refusal(client, base)
            assert "could not fetch" not in message, base  # refused for its shape
        assert site.requests == []


@pytest.mark.parametrize(("answer", "hidden"), [
    (Answer(404, b"<html>no such page</html>"), ["404", "Not Found"]),
    (Answer(500, b"boom"), ["500"]),
    (Answer(401, b"", {"WWW-Authenticate": "Basic"}), ["401"]),
    (Answer(200, b"<internalSecretDocument><token>t0p</token></internalSecretDocument>"),
     ["internalSecretDocument", "t0p"]),
    (Answer(200, b"not xml at all"), ["not xml", "syntax"]),
    (Answer(200, b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "a">]><consumer/>'),
     ["DTD", "ENTITY"]),
    (Answer(200, b"<consumer><key>k</key><publicKey>" + b"A" * 70000 + b"</publicKey>"
                 b"</consumer>"), ["KiB", "65536", "bytes"]),
    (Answer(200, b"<consumer><name>n</name></consumer>"), ["<key>"]),
])
def test_what_the_target_answered_is_not_shown_to_the_admin(client, caplog, answer, hidden):
    with Site({INFO_PATH: answer}) as site, \
            caplog.at_level(logging.INFO, logger="oauthledger.services.remote_fetch"):
        message = refusal(client, site.url)
    assert message == f"could not fetch consumer info from 127.0.0.1:{site.port}: {NO_INFO}"
    reason = message.rsplit(": ", 1)[1]
    for word in hidden + ["HTTP", "refused", "connect"]:
        assert word not in reason
    # The detail is in the server log, for the operator.
    assert f"127.0.0.1:{site.port}" in caplog.text
    if answer.status != 200:
        assert f"HTTP {answer.status}" in caplog.text
    if b"internalSecretDocument" in answer.body:
        assert "<internalSecretDocument>" in caplog.text


def test_a_closed_port_looks_like_any_other_failure(client, caplog):
    with Site() as site:
        dead = site.url  # nothing listens there once the site is closed
    with caplog.at_level(logging.INFO, logger="oauthledger.services.remote_fetch"):
        message = refusal(client, dead)
    assert message == f"could not fetch consumer info from {dead[len('http://'):]}: {NO_INFO}"
    assert "refused" not in message.lower() and "closed" not in message.lower()
    assert "Connection refused" in caplog.text or "ConnectionRefused" in caplog.text


def test_redirects_are_vetted_hop_by_hop(client):
    xml = consumer_xml("other:1")
    with Site({INFO_PATH: Answer(body=xml)}) as good, Site() as hops:
        hops.answers.update({
            # To another application's consumer info: followed (each hop vetted).
            f"/moved{INFO_PATH}": Answer(302, headers={"Location": f"{good.url}{INFO_PATH}"}),
            # To the cloud metadata service: link-local, refused even with the setting.
            f"/metadata{INFO_PATH}": Answer(302, headers={
                "Location": f"http://169.254.169.254{INFO_PATH}"}),
            # To an odd spelling of loopback: refused.
            f"/hex{INFO_PATH}": Answer(307, headers={
                "Location": f"http://0x7f000001:{good.port}{INFO_PATH}"}),
            # To another path: the redirect may not choose what is fetched.
            f"/elsewhere{INFO_PATH}": Answer(301, headers={"Location": f"{good.url}/secret"}),
            f"/query{INFO_PATH}": Answer(301, headers={
                "Location": f"{good.url}{INFO_PATH}?debug=1"}),
            # A loop: given up after a few hops.
            f"/loop{INFO_PATH}": Answer(302, headers={"Location": f"/loop{INFO_PATH}"}),
        })
        got = fetch_via_api(client, f"{hops.url}/moved")
        assert got.status_code == 200 and got.json["key"] == "other:1"
        assert good.paths == [INFO_PATH]

        assert refusal(client, f"{hops.url}/metadata").endswith(NOT_ALLOWED)
        assert refusal(client, f"{hops.url}/hex").endswith(NOT_ALLOWED)
        assert refusal(client, f"{hops.url}/elsewhere").endswith(NO_INFO)
        assert refusal(client, f"{hops.url}/query").endswith(NO_INFO)
        assert good.paths == [INFO_PATH]  # none of those reached it

        before = len(hops.requests)
        assert refusal(client, f"{hops.url}/loop").endswith(NO_INFO)
        assert len(hops.requests) - before == 1 + remote_fetch.MAX_REDIRECTS


def test_a_server_that_drips_its_answer_is_cut_off_at_the_deadline(deps, caplog):
    # Every read returns quickly, so per-read timeouts never fire: only the one deadline
    # for the whole fetch stops it. Left alone, the drip ends with valid consumer info
    # after ``drip_seconds``, so a fetch without that deadline would succeed.
    drip_seconds, stop = 20.0, threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(int(drip_seconds / 0.1)):
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(b"a")
                except OSError:
                    return  # the fetch gave up and closed its end
            body = consumer_xml("slow:1")
            conn.sendall(b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    policy = remote_fetch.policy(deps.settings, timeout=1.0)
    try:
        with pytest.raises(ValidationError) as caught, \
                caplog.at_level(logging.INFO, logger="oauthledger.services.remote_fetch"):
            remote_fetch.fetch_consumer_info(f"http://127.0.0.1:{port}", policy)
        assert caught.value.fields["base_url"].endswith(NO_INFO)
        assert "timed out" in caplog.text
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_the_connection_goes_to_the_vetted_address_not_a_second_resolution(deps):
    # DNS rebinding: the name resolves to an allowed address when it is vetted and to
    # another one later. The fetch must resolve once and connect to what it vetted.
    with Site({INFO_PATH: Answer(body=consumer_xml("vetted:1"))}) as vetted, \
            Site({INFO_PATH: Answer(body=consumer_xml("rebound:1"))}, host="127.0.0.2",
                 port=vetted.port) as rebound:
        answers = iter([["127.0.0.1"]])
        asked: list[tuple[str, int]] = []

        def rebinding_resolver(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return next(answers, ["127.0.0.2"])

        policy = remote_fetch.policy(deps.settings, resolver=rebinding_resolver)
        info = remote_fetch.fetch_consumer_info(f"http://rebind.test:{vetted.port}/", policy)
        assert info.key == "vetted:1"
        assert asked == [("rebind.test", vetted.port)]
        assert vetted.requests == [(INFO_PATH, f"rebind.test:{vetted.port}")]
        assert rebound.requests == []


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(a server context with a self-signed certificate for ``name``, a client context
    that trusts exactly that certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_checks_the_certificate_against_the_name_while_connecting_to_the_address(
        deps, tmp_path):
    server_tls, client_tls = _certificate(tmp_path, "consumer.test")
    names = {"consumer.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]}
    policy = remote_fetch.policy(deps.settings, resolver=lambda host, port: names[host],
                                 ssl_context=client_tls)
    with Site({INFO_PATH: Answer(body=consumer_xml("tls:1"))}, tls=server_tls) as site:
        info = remote_fetch.fetch_consumer_info(f"https://consumer.test:{site.port}", policy)
        assert info.key == "tls:1"
        assert site.sni == ["consumer.test"]
        assert site.requests == [(INFO_PATH, f"consumer.test:{site.port}")]
        # The same address under a name the certificate does not carry: refused.
        with pytest.raises(ValidationError) as caught:
            remote_fetch.fetch_consumer_info(f"https://impostor.test:{site.port}", policy)
        assert caught.value.fields["base_url"].endswith(NO_INFO)
        assert len(site.requests) == 1


def test_the_server_never_fetches_from_itself(deps):
    # One thread serves the app, as the embedded default's one sync worker does: a fetch
    # from itself would wait for itself until the timeout. It is refused up front.
    app = create_app(deps)
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for target in (base, f"http://[::ffff:127.0.0.1]:{server.server_port}/",
                       f"http://localhost:{server.server_port}/"):
            resp = requests.get(f"{base}/rest/oauthledger/1/remote-consumer-info?"
                                + urlencode({"baseUrl": target}),
                                auth=("root", ADMIN_PW), timeout=30)
            assert resp.status_code == 422, resp.text
            assert "this server itself" in resp.json()["errors"]["baseUrl"], target
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_through_the_api_the_admins_own_host_is_this_server(client):
    # Whatever name the admin reached us by is us, even when it is loopback and allowed.
    with Site({INFO_PATH: Answer(body=consumer_xml())}) as site:
        resp = call(client, "GET", "/remote-consumer-info", params={"baseUrl": site.url},
                    headers={"Host": f"127.0.0.1:{site.port}"})
        assert resp.status_code == 422
        assert "this server itself" in resp.json["errors"]["baseUrl"]
        assert site.requests == []

