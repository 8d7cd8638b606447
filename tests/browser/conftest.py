"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by Playwright's sync API,
against real gunicorn front ends started by the tests (tests/e2e/servers.py helpers:
`oauthledger serve`, PostgreSQL schema per stack, the real Redis under a unique prefix).

Playwright's own browser download is never used (`playwright install` cannot work
here); tests/run installs the chromium package. Screenshots go to
test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import PASSWORD, Stack, make_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session. Fails (never skips) without the package."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (tests/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _add_users(stack: Stack, users: list[tuple[str, bool]]) -> None:
    """Create users with the CLI, as an operator would (`oauthledger user add`)."""
    stack.cli_many([(["user", "add", name, *(["--admin"] if admin else []),
                      "--password-stdin"], PASSWORD + "\n") for name, admin in users])


@pytest.fixture(scope="module")
def stacks() -> Iterator[tuple[Stack, Stack]]:
    """Two separate oauthledger installations: A (under test: an admin ``admin`` and a
    user ``alice``) and B (the other application whose consumer info A fetches)."""
    # B listens on loopback: A may fetch from it only with the operator's setting.
    a = make_stack(servers=1, worker=False, OAUTHLEDGER_FETCH_ALLOW_PRIVATE="1")
    try:
        b = make_stack(servers=1, worker=False)
    except BaseException:
        a.close()
        raise
    try:
        _add_users(a, [("admin", True), ("alice", False)])
        yield a, b
    finally:
        a.close()
        b.close()


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
