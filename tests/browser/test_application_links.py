"""An application link between two real installations, in a real browser.

Scenario: the admin of A adds B as a service provider by its base URL (the name comes
from B's application-links manifest); B registers A as a consumer from A's consumer-info
XML (as B's "add by URL" would); a user of A opens the Connections page, presses
Connect, signs in and approves on B, lands back on A and sees "Connected"; the admin sees
the connection on the provider's page; the user disconnects. Screenshots on desktop and
phone viewports are saved under test-artifacts/browser/ (docs/admin.md, "Service
Providers" and "Connections").

The browser reaches A as 127.0.0.1 and B as localhost: cookies are kept per host, not per
port, so two installations on one host name would sign each other's users out.
"""

from __future__ import annotations

import re

import requests

from oauthledger.services.consumers import ConsumerInput, register_consumer
from oauthledger.services.installation import parse_consumer_info, update_installation
from tests.browser.conftest import DESKTOP, PHONE, shot
from tests.e2e.servers import PASSWORD, add_user

CONNECTIONS = "/plugins/servlet/oauth/users/connections"
TAB = "/plugins/servlet/oauth/admin/service-providers"
B_NAME = "Bee Ledger"


def sign_in(page, user: str) -> None:
    """Fill in the login form the server redirected to."""
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def row(page, provider: str):
    """The connections page's row of ``provider`` (its id holds the name as is)."""
    return page.locator(f'tr[id="connection-{provider}"]')


def test_user_connects_to_another_installation_and_disconnects(browser, stacks):
    a, b = stacks
    b_base = f"http://localhost:{b.servers[0].port}"
    b_deps = b.deps()
    update_installation(b_deps.ledger, b_deps.sealer, B_NAME, "", {"actor": "test"})

    # -- the admin of A adds B by its base URL ---------------------------------------
    admin_ctx = browser.new_context(viewport=DESKTOP)
    admin = admin_ctx.new_page()
    admin.goto(a.url + TAB)
    sign_in(admin, "admin")
    admin.wait_for_url(a.url + TAB)
    admin.fill("#u-base_url", "ftp://nowhere.example")
    admin.click("#add-provider-by-url")
    assert "http" in admin.locator("#ue-base_url").inner_text()
    assert admin.locator("#u-base_url").get_attribute("aria-invalid") == "true"
    shot(admin, "applinks-01-admin-add-by-url-error")
    admin.fill("#u-base_url", b_base)
    admin.click("#add-provider-by-url")
    # Name and description left empty: B's manifest names it.
    assert admin.locator("#provider-name").inner_text() == B_NAME
    assert admin.locator(".notice").inner_text() == "The service provider was added."
    consumer_info_url = admin.locator("#consumer-info-url").inner_text()
    assert consumer_info_url == a.url + "/plugins/servlet/oauth/consumer-info"
    our_key = admin.locator("#our-consumer-key").inner_text()
    assert our_key.startswith("oauthledger:")
    assert admin.locator("#no-connections").is_visible()
    shot(admin, "applinks-02-admin-provider-view")

    # -- B registers A as a consumer from A's consumer info ------------------------------
    xml = requests.get(consumer_info_url, timeout=10)
    info = parse_consumer_info(xml.content, consumer_info_url)
    assert info.key == our_key
    register_consumer(b_deps.ledger, b_deps.sealer, info.key,
                      ConsumerInput(name=info.name, description=info.description,
                                    public_key=info.public_key,
                                    signature_methods=["RSA-SHA1"]),
                      {"actor": "admin-of-b"})
    b_user = add_user(b)

    # -- a user of A connects --------------------------------------------------------------
    user_ctx = browser.new_context(viewport=DESKTOP)
    page = user_ctx.new_page()
    page.goto(a.url + "/")
    sign_in(page, "alice")
    page.wait_for_url(a.url + "/")
    page.get_by_role("link", name="Connections", exact=True).click()
    page.wait_for_url(a.url + CONNECTIONS)
    assert row(page, B_NAME).locator(".connection-status").inner_text() == "Not connected"
    shot(page, "applinks-03-user-not-connected")
    row(page, B_NAME).get_by_role("button", name=f"Connect to {B_NAME}").click()
    # At B: sign in, then the authorize page names A.
    page.wait_for_url(b_base + "/login*")
    sign_in(page, b_user)
    page.wait_for_selector("#approve")
    assert page.url.startswith(b_base + "/plugins/servlet/oauth/authorize")
    assert info.name in page.locator(".consumer-name").inner_text()
    shot(page, "applinks-04-user-approves-at-b")
    page.click("#approve")
    page.wait_for_url(a.url + CONNECTIONS + "*")
    assert page.locator("#connection-message").inner_text() == f"Connected to {B_NAME}."
    status = row(page, B_NAME).locator(".connection-status").inner_text()
    assert status.startswith("Connected since") and "expires at" in status
    assert "oauth_verifier" not in page.url and "oauth_token" not in page.url
    shot(page, "applinks-05-user-connected")
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                device_scale_factor=2, storage_state=user_ctx.storage_state())
    ppage = phone.new_page()
    ppage.goto(a.url + CONNECTIONS)
    assert ppage.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(ppage, "applinks-06-user-connected-phone")
    phone.close()

    # -- the admin sees the connection --------------------------------------------------
    admin.reload()
    connections = admin.locator("#connections").inner_text()
    assert "alice" in connections and "Connected" in connections
    assert admin.get_by_role("button", name="Drop the connection of alice").is_visible()
    shot(admin, "applinks-07-admin-sees-connection")

    # -- the user disconnects -----------------------------------------------------------
    row(page, B_NAME).get_by_role("button", name=f"Disconnect from {B_NAME}").click()
    page.wait_for_url(a.url + CONNECTIONS + "*")
    assert page.locator("#connection-message").inner_text().startswith(
        f"Disconnected from {B_NAME}")
    assert row(page, B_NAME).locator(".connection-status").inner_text() == "Not connected"
    assert row(page, B_NAME).get_by_role("button", name=re.compile("^Disconnect")).count() == 0
    shot(page, "applinks-08-user-disconnected")
    admin.reload()
    assert admin.locator("#no-connections").is_visible()

    # -- the admin edits it: the name stays, the description changes ------------------------
    admin.click("#edit-provider")
    assert admin.locator("#provider-name").inner_text() == B_NAME
    assert admin.locator("#f-base_url").input_value() == b_base
    assert admin.locator("#signing-rsa").is_checked()
    admin.fill("#f-description", "Installation B, linked both ways")
    shot(admin, "applinks-10-admin-provider-edit")
    admin.click("#save-provider")
    assert admin.locator(".notice").inner_text().startswith("The service provider was saved.")
    assert "Installation B, linked both ways" in admin.locator(".summary").first.inner_text()

    # -- the tab lists B with its base URL ------------------------------------------------
    admin.goto(a.url + TAB)
    assert b_base in admin.locator("#providers").inner_text()
    shot(admin, "applinks-09-admin-service-providers")
    user_ctx.close()
    admin_ctx.close()
