"""``oauthledger consumer add --url BASE_URL`` on both store backends, against a real
``oauthledger serve`` process serving its consumer info: key, name and public key come
from that document and the consumer is registered for RSA-SHA1 (the other half of an
application link, docs/application-links.md). Every refusal is one line, never a
traceback, and loopback is reached only with OAUTHLEDGER_FETCH_ALLOW_PRIVATE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from oauthledger.events.connections import open_sealer
from oauthledger.events.keys import KeyLayout
from oauthledger.events.settings import load_settings
from oauthledger.services.cli import consumers as cli_consumers
from oauthledger.services.cli.main import cli
from oauthledger.services.installation import CONSUMER_INFO_PATH, parse_consumer_info
from tests.conftest import REDIS_URL, migrated_store
from tests.e2e import servers
from tests.support import public_pem

for _group in cli_consumers.COMMANDS:
    cli.add_command(_group)


@pytest.fixture(scope="module")
def other_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """Another installation: the embedded default, one process, its own data dir."""
    work = tmp_path_factory.mktemp("other-app")
    server = servers.start_server(servers.embedded_env(work / "data"), work, workers=None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli_env(store_url: str, key_layout: KeyLayout, tmp_path: Path) -> dict[str, str]:
    """The CLI's settings: the parametrized store (migrated), the real Redis under the
    test's prefix, loopback fetches allowed."""
    with migrated_store(store_url):
        pass
    env = {"OAUTHLEDGER_DATABASE_URL": store_url, "OAUTHLEDGER_REDIS_URL": REDIS_URL,
            "OAUTHLEDGER_REDIS_PREFIX": key_layout.prefix,
            "OAUTHLEDGER_DATA_DIR": str(tmp_path / "data"),
            "OAUTHLEDGER_FETCH_ALLOW_PRIVATE": "true"}
    # An installation exists: its key file (commands never create one silently).
    open_sealer(load_settings(env))
    return env


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_error(result: Result) -> str:
    """The single ``oauthledger: ...`` line of an expected failure (exit status 1)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oauthledger: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_add_by_url_takes_key_name_and_public_key(other_app: servers.Server,
                                                  cli_env: dict[str, str]) -> None:
    xml = requests.get(other_app.url + CONSUMER_INFO_PATH, timeout=10)
    info = parse_consumer_info(xml.content)
    done = run(cli_env, "consumer", "add", "--url", other_app.url + "/")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"consumer {info.key} registered (RSA-SHA1)",
        f"name: {info.name} (from {other_app.url}{CONSUMER_INFO_PATH})",
    ]
    shown = run(cli_env, "consumer", "show", info.key)
    view = json.loads(shown.output)
    assert (view["key"], view["name"], view["signatureMethods"]) == (
        info.key, info.name, ["RSA-SHA1"])
    assert view["publicKey"].strip() == info.public_key.strip()
    assert view["hasSharedSecret"] is False

    # The same application again: the key is taken.
    again = one_line_error(run(cli_env, "consumer", "add", "--url", other_app.url))
    assert again == f"oauthledger: a consumer with key {info.key!r} already exists"


def test_add_by_url_with_key_name_and_methods_given(other_app: servers.Server,
                                                    cli_env: dict[str, str]) -> None:
    info = parse_consumer_info(requests.get(other_app.url + CONSUMER_INFO_PATH,
                                            timeout=10).content)
    done = run(cli_env, "consumer", "add", info.key, "--url", other_app.url, "--name",
               "Installation B", "--description", "the other one", "--signature-methods",
               "RSA-SHA1,RSA-SHA256")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == \
        f"consumer {info.key} registered (RSA-SHA1, RSA-SHA256)"
    view = json.loads(run(cli_env, "consumer", "show", info.key).output)
    assert (view["name"], view["description"]) == ("Installation B", "the other one")


def test_refusals_are_one_line(other_app: servers.Server, cli_env: dict[str, str],
                               tmp_path: Path) -> None:
    port = other_app.port
    mismatch = one_line_error(run(cli_env, "consumer", "add", "other:1", "--url",
                                  other_app.url))
    assert mismatch.startswith(f"oauthledger: the consumer info at {other_app.url}"
                               f"{CONSUMER_INFO_PATH} names the key ")
    assert mismatch.endswith(", not 'other:1'")
    pem = tmp_path / "key.pem"
    pem.write_text(public_pem())
    assert "give no --public-key" in one_line_error(run(
        cli_env, "consumer", "add", "--url", other_app.url, "--public-key", str(pem)))
    assert "give no --public-key, --secret" in one_line_error(run(
        cli_env, "consumer", "add", "--url", other_app.url, "--generate-secret"))
    assert one_line_error(run(cli_env, "consumer", "add")) == (
        "oauthledger: give the consumer's KEY, or --url BASE_URL to take it from the "
        "application's consumer info")
    assert one_line_error(run(cli_env, "consumer", "add", "k1", "--secret",
                              "long enough secret")).startswith("oauthledger: --name is required")
    # Loopback needs OAUTHLEDGER_FETCH_ALLOW_PRIVATE (docs/admin.md, "Add by URL").
    strict = {**cli_env, "OAUTHLEDGER_FETCH_ALLOW_PRIVATE": "false"}
    assert one_line_error(run(strict, "consumer", "add", "--url", other_app.url)) == (
        f"oauthledger: --url: could not fetch consumer info from 127.0.0.1:{port}: "
        "the address is not allowed")
    # Nothing listens there, and a site that is no oauthledger (its page is not
    # consumer info): the generic words of the admin page.
    closed = servers.free_port()
    down = one_line_error(run(cli_env, "consumer", "add", "--url",
                              f"http://127.0.0.1:{closed}"))
    assert down.startswith(f"oauthledger: --url: could not fetch consumer info from "
                           f"127.0.0.1:{closed}: ")
    wrong = one_line_error(run(cli_env, "consumer", "add", "--url",
                               f"{other_app.url}/healthz"))
    assert wrong.startswith("oauthledger: --url: could not fetch consumer info from ")
    assert one_line_error(run(cli_env, "consumer", "add", "--url", "ftp://example.com")
                          ).startswith("oauthledger: --url: ")
    assert "registered" not in run(cli_env, "consumer", "list").output
