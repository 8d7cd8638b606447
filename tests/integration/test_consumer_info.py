"""The consumer-info XML (docs/oauth.md, "Endpoints"): it parses, it is served as
application/xml to anyone, and its public key verifies a signature made with the
installation's private key (which only ever sits sealed in the log)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from oauthledger.events.state import INSTALLATION_STREAM
from oauthledger.services.installation import (
    load_installation,
    parse_consumer_info,
    private_key_pem,
)
from oauthledger.services.oauth.signatures import load_public_key, sign
from tests.integration.test_admin_api import ADMIN, app, client, deps  # noqa: F401

PATH = "/plugins/servlet/oauth/consumer-info"


def _verify(public_pem: str, base: str, signature: str) -> bool:
    try:
        load_public_key(public_pem).verify(base64.b64decode(signature), base.encode(),
                                           padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return False
    return True


def test_consumer_info_xml_parses_and_its_key_verifies_our_signatures(client, deps):  # noqa: F811
    resp = client.simulate_get(PATH)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(resp.content)
    assert root.tag == "consumer"
    assert [child.tag for child in root] == ["key", "name", "publicKey", "description"]
    public_pem = root.findtext("publicKey")
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")

    state = load_installation(deps.ledger)
    assert root.findtext("key") == state.key and root.findtext("name") == state.name
    private = private_key_pem(state, deps.sealer)
    base = "POST&https%3A%2F%2Fprovider.example%2Frequest-token&oauth_consumer_key%3Dk"
    signature = sign("RSA-SHA1", base, private_key_pem=private)
    assert _verify(public_pem, base, signature)
    assert not _verify(public_pem, base + "x", signature)

    # What we serve is exactly what "add consumer by URL" reads on the other side.
    parsed = parse_consumer_info(resp.content)
    assert (parsed.key, parsed.public_key) == (state.key, state.public_key)

    # After rotation the old key no longer verifies new signatures; the XML follows.
    client.simulate_post("/rest/oauthledger/1/consumer-info/rotate", headers=ADMIN)
    new_root = ET.fromstring(client.simulate_get(PATH).content)
    new_state = load_installation(deps.ledger)
    new_sig = sign("RSA-SHA1", base, private_key_pem=private_key_pem(new_state, deps.sealer))
    assert _verify(new_root.findtext("publicKey"), base, new_sig)
    assert not _verify(public_pem, base, new_sig)
    assert new_root.findtext("key") == state.key
    # The identity was generated once by the anonymous fetch, with "system" as actor.
    records = deps.store.read_stream(INSTALLATION_STREAM)
    assert [r.meta["actor"] for r in records] == ["system", "root"]
