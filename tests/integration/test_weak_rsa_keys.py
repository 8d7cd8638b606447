"""RSA keys under 2048 bits (accepted from 1024; NIST SP 800-131A disallows new ones) are
flagged wherever an admin sees them: the consumer list and page, the service-provider
pages where this installation's key signs, and the `oauthledger consumer add` / `show`
commands (docs/admin.md, "Consumers"). Also: a removed consumer's key is free again."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oauthledger.events import catalog as ev
from oauthledger.events.state import INSTALLATION_STREAM, consumer_stream
from oauthledger.services.cli import consumers as cli_consumers
from oauthledger.services.cli.main import cli
from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.ledger import Change
from tests.conftest import embedded_deps_in
from tests.integration.test_admin_api import (  # noqa: F401
    ADMIN_PW,
    app,
    client,
    deps,
)
from tests.integration.test_admin_api_pages import Browser
from tests.support import META, public_pem

for _group in cli_consumers.COMMANDS:
    cli.add_command(_group)

ADMIN = "/plugins/servlet/oauth/admin"
WEAK = "1024-bit RSA key: accepted, but 2048 bits or more are recommended"


def key_pair(bits: int) -> tuple[str, str]:
    """(private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def rsa_consumer(deps, key: str, pem: str) -> None:  # noqa: F811
    register_consumer(deps.ledger, deps.sealer, key, ConsumerInput(name=f"App {key}",
                                                                   public_key=pem), META)


def test_consumer_list_and_page_flag_a_weak_key(client, deps):  # noqa: F811
    rsa_consumer(deps, "weak", key_pair(1024)[1])
    rsa_consumer(deps, "strong", public_pem())
    root = Browser(client, "root", ADMIN_PW)
    listing = root.get(ADMIN).text
    rows = {key: row for key, row in
            (chunk.split('"', 1) for chunk in listing.split('<tr data-key="')[1:])}
    assert "weak RSA key" in rows["weak"] and WEAK in rows["weak"]
    assert "weak RSA key" not in rows["strong"]
    page = root.get(f"{ADMIN}/consumers/edit", key="weak").text
    assert 'id="public-key-warning"' in page and WEAK in page
    assert 'id="public-key-warning"' not in root.get(f"{ADMIN}/consumers/edit",
                                                      key="strong").text


def test_provider_pages_flag_a_weak_installation_key(client, deps):  # noqa: F811
    # An identity from elsewhere (or an older release) with a 1024-bit key pair; the
    # application itself generates 2048-bit pairs.
    private, public = key_pair(1024)
    deps.ledger.commit([Change(INSTALLATION_STREAM, 0, None, [ev.ConsumerInfoChanged(
        key="oauthledger:000000001", name="oauthledger", description="", public_key=public,
        private_key_sealed=deps.sealer.seal(private))])], META)
    root = Browser(client, "root", ADMIN_PW)
    urls = {"request_token_url": "https://p.example/rt",
            "authorize_url": "https://p.example/a", "access_token_url": "https://p.example/at"}
    assert root.post(f"{ADMIN}/service-providers", {
        "name": "Signed", "consumer_key": "ck1", "signing": "rsa", **urls}).status_code == 303
    assert root.post(f"{ADMIN}/service-providers", {
        "name": "Shared", "consumer_key": "ck2", "signing": "secret",
        "shared_secret": "provider-secret", **urls}).status_code == 303
    signed = root.get(f"{ADMIN}/service-providers/view", name="Signed").text
    assert 'id="public-key-warning"' in signed and WEAK in signed
    shared = root.get(f"{ADMIN}/service-providers/view", name="Shared").text
    assert 'id="public-key-warning"' not in shared  # HMAC: our key is not used
    assert root.get(f"{ADMIN}/service-providers").text.count("weak RSA key") == 1


def test_a_removed_consumer_key_can_be_registered_again(client, deps):  # noqa: F811
    rsa_consumer(deps, "again", public_pem())
    root = Browser(client, "root", ADMIN_PW)
    page = root.get(f"{ADMIN}/consumers/edit", key="again").text
    assert "stays reserved" not in page and "can be registered again" in page
    assert root.post(f"{ADMIN}/consumers/remove", {"key": "again"}).status_code == 303
    added = root.post(f"{ADMIN}/consumers/add", {"key": "again", "name": "New app",
                                                 "secret": "a-new-secret"})
    assert added.status_code == 201, added.text
    state, _ = deps.ledger.load(consumer_stream("again"))
    assert state.name == "New app" and not state.removed and state.public_key is None


def run(tmp_path: Path, *args: str) -> Result:
    """The CLI on the embedded default in ``tmp_path`` (no server needed here), on an
    installation that exists (commands never create one silently)."""
    if not (tmp_path / "data").exists():
        with embedded_deps_in(tmp_path / "data"):
            pass
    env = {"OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"), "OAUTHLEDGER_DATABASE_URL": None,
           "OAUTHLEDGER_REDIS_URL": None, "OAUTHLEDGER_BROKER_URL": None,
           "OAUTHLEDGER_SECRET_KEY_FILE": None}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_cli_add_and_show_print_the_warning(tmp_path: Path) -> None:
    weak = tmp_path / "weak.pem"
    weak.write_text(key_pair(1024)[1])
    strong = tmp_path / "strong.pem"
    strong.write_text(public_pem())
    added = run(tmp_path, "consumer", "add", "weak", "--name", "Weak", "--public-key", str(weak))
    assert added.exit_code == 0, added.output
    assert added.stderr.splitlines() == [f"warning: {WEAK}"]
    shown = run(tmp_path, "consumer", "show", "weak")
    assert shown.exit_code == 0 and shown.stderr.splitlines() == [f"warning: {WEAK}"]
    assert f'"publicKeyWarning": "{WEAK}"' in shown.stdout
    assert run(tmp_path, "consumer", "add", "strong", "--name", "Strong", "--public-key",
               str(strong)).stderr == ""
    assert run(tmp_path, "consumer", "show", "strong").stderr == ""
