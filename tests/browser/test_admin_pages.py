"""The OAuth Administration pages and the users' token page in a real browser.

Scenario: an admin signs in (by keyboard), adds a consumer by hand and another
by URL (a second oauthledger installation's consumer-info XML), edits one and sees the
list; a user completes the dance with a real client (requests-oauthlib), approving in the
browser, sees the token on their page, revokes it there, and the client's next call
fails with token_revoked; the user is refused the admin page. Screenshots on desktop and
phone viewports are saved under test-artifacts/browser/.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests
from requests_oauthlib import OAuth1Session

from tests.browser.conftest import DESKTOP, PHONE, shot
from tests.e2e.servers import PASSWORD

ADMIN = "/plugins/servlet/oauth/admin"
MINE = "/plugins/servlet/oauth/users/access-tokens"
CALLBACK = "http://client.test:8765/oauth/callback"
KEY = "photo-printer"
SECRET = "photo-printer-shared-secret"


def sign_in_by_keyboard(page, base: str, user: str) -> None:
    """Sign in using the keyboard only (the login form is autofocused)."""
    page.goto(base + "/")
    assert "/login" in page.url
    # Typing before the browser has applied the form's autofocus loses the keystrokes:
    # wait until the username field has the focus, as a person would see the cursor.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'username'")
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/")


def sign_in(page, user: str) -> None:
    """Fill in the login form the server redirected to."""
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def test_admin_adds_edits_consumers_and_user_revokes_a_token(browser, stacks):
    a, b = stacks
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()

    # -- the admin signs in and opens OAuth Administration from the home page ---------
    sign_in_by_keyboard(page, a.url, "admin")
    page.get_by_role("link", name="OAuth Administration").first.click()
    page.wait_for_url(a.url + ADMIN)
    assert page.get_by_role("heading", name="OAuth Administration").is_visible()
    assert page.locator(".tabs a[aria-current=page]").inner_text() == "Consumers"
    shot(page, "01-admin-consumers-empty")

    # -- add a consumer by hand ------------------------------------------------------
    page.click("#add-consumer")
    page.fill("#f-key", KEY)
    page.fill("#f-name", "Photo Printer <beta>")
    page.fill("#f-description", "Prints your photos & albums")
    page.fill("#f-callback_url", "http://client.test:8765/")
    page.fill("#f-secret", SECRET)
    page.check("#f-signature_methods-HMAC-SHA1")
    page.check("#f-signature_methods-HMAC-SHA256")
    shot(page, "02-admin-consumer-add-form")
    page.click("#save")
    assert page.locator("#created-key").inner_text() == KEY
    assert SECRET not in page.content()  # a typed secret is never echoed back

    # The same key again: the message sits next to the key field; nothing changes.
    page.goto(a.url + ADMIN + "/consumers/add")
    page.fill("#f-key", KEY)
    page.fill("#f-name", "Impostor")
    page.fill("#f-public_key", "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----")
    page.click("#save")
    assert "already exists" in page.locator("#e-key").inner_text()
    assert page.locator("#f-key").get_attribute("aria-invalid") == "true"
    shot(page, "03-admin-consumer-add-error")

    # -- add a consumer by URL: installation B's consumer-info XML --------------------
    b_xml = requests.get(b.url + "/plugins/servlet/oauth/consumer-info", timeout=10)
    assert b_xml.headers["Content-Type"].startswith("application/xml")
    b_key = re.search(r"<key>([^<]+)</key>", b_xml.text).group(1)
    page.goto(a.url + ADMIN)
    page.click("#add-consumer-by-url")
    page.fill("#f-base_url", "ftp://example.com")
    page.click("#fetch")
    assert "http" in page.locator("#e-base_url").inner_text()
    page.fill("#f-base_url", b.url)
    page.click("#fetch")
    fetched = page.locator("#fetched")
    assert b_key in fetched.inner_text() and "BEGIN PUBLIC KEY" in fetched.inner_text()
    assert page.locator("#f-key").input_value() == b_key
    shot(page, "04-admin-consumer-fetched")
    page.click("#save")
    assert page.locator("#created-key").inner_text() == b_key

    # -- edit the first consumer (its key cannot change) ------------------------------
    page.goto(a.url + ADMIN)
    page.get_by_role("link", name="Photo Printer <beta>").click()
    assert page.locator("#consumer-key").inner_text() == KEY
    assert page.locator("#f-key").count() == 0
    page.fill("#f-name", "Photo Printer")
    page.click("#save")
    assert page.locator(".notice").inner_text() == "The consumer was saved."
    history = page.locator("#history").inner_text()
    assert "changed name" in history and "registered as" in history and "admin" in history
    shot(page, "05-admin-consumer-edit")

    page.goto(a.url + ADMIN)
    rows = page.locator("#consumers tbody tr")
    assert rows.count() == 2
    listing = page.locator("#consumers").inner_text()
    assert KEY in listing and b_key in listing and "Photo Printer" in listing
    shot(page, "06-admin-consumers-list")

    # -- a user completes the dance with a real client, approving in the browser ------
    user_ctx = browser.new_context(viewport=DESKTOP)
    # The consumer's callback is observed, never served: the browser stops there.
    user_ctx.route("http://client.test:8765/**", lambda route: route.fulfill(
        status=200, content_type="text/plain", body="back at the client"))
    upage = user_ctx.new_page()
    client = OAuth1Session(KEY, client_secret=SECRET, callback_uri=CALLBACK,
                           signature_method="HMAC-SHA1")
    client.fetch_request_token(a.url + "/plugins/servlet/oauth/request-token")
    upage.goto(client.authorization_url(a.url + "/plugins/servlet/oauth/authorize"))
    sign_in(upage, "alice")
    upage.wait_for_selector("#approve")
    assert upage.locator(".consumer-name").inner_text() == "Photo Printer"
    shot(upage, "07-user-authorize")
    upage.click("#approve")
    upage.wait_for_url(CALLBACK + "*")
    assert parse_qs(urlsplit(upage.url).query)["oauth_verifier"]
    client.parse_authorization_response(upage.url)
    client.fetch_access_token(a.url + "/plugins/servlet/oauth/access-token")
    me = client.get(a.url + "/rest/api/2/myself", timeout=10)
    assert me.status_code == 200 and me.json()["name"] == "alice"

    # -- the token is on the user's page; revoke it there --------------------------------
    upage.goto(a.url + MINE)
    row = upage.locator("#my-tokens tbody tr")
    assert row.count() == 1
    assert "Photo Printer" in row.inner_text() and "Prints your photos & albums" in row.inner_text()
    shot(upage, "08-user-tokens")
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                device_scale_factor=2, storage_state=user_ctx.storage_state())
    ppage = phone.new_page()
    ppage.goto(a.url + MINE)
    shot(ppage, "09-user-tokens-phone")
    phone.close()

    # Admins see it among all tokens, filterable by user.
    page.goto(a.url + ADMIN + "/tokens")
    page.fill("#filter-user", "alice")
    page.click("#filter")
    assert "alice" in page.locator("#tokens").inner_text()
    shot(page, "10-admin-tokens")

    upage.get_by_role("button", name="Revoke access of Photo Printer").click()
    assert "revoked" in upage.locator(".notice").inner_text()
    assert upage.locator("#my-tokens").count() == 0
    after = client.get(a.url + "/rest/api/2/myself", timeout=10)
    assert after.status_code == 401
    assert 'oauth_problem="token_revoked"' in after.headers["WWW-Authenticate"]

    # -- a non-admin is refused the admin page ----------------------------------------
    refused = upage.goto(a.url + ADMIN)
    assert refused.status == 403
    assert upage.get_by_role("heading", name="Administrators only").is_visible()
    assert upage.get_by_role("link", name="OAuth Administration").count() == 0
    shot(upage, "11-non-admin-refused")

    # -- the other tabs, on a desktop and a phone --------------------------------------
    page.goto(a.url + ADMIN + "/consumer-info")
    assert page.locator("#info-key").inner_text().startswith("oauthledger:")
    shot(page, "12-admin-consumer-info")
    page.goto(a.url + ADMIN + "/service-providers")
    page.fill("#f-name", "Example Photos")
    page.fill("#f-consumer_key", "our-key")
    page.check("#signing-rsa")
    page.fill("#f-request_token_url", "https://photos.example.net/initiate")
    page.fill("#f-authorize_url", "https://photos.example.net/authorize")
    page.fill("#f-access_token_url", "https://photos.example.net/token")
    page.click("#add-provider")
    assert page.locator("#provider-name").inner_text() == "Example Photos"
    assert page.locator(".notice").inner_text() == "The service provider was added."
    shot(page, "13-admin-service-provider-view")
    page.get_by_role("link", name="Back to service providers").click()
    assert "Example Photos" in page.locator("#providers").inner_text()
    shot(page, "14-admin-service-providers")
    admin_phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                      device_scale_factor=2, storage_state=ctx.storage_state())
    ppage = admin_phone.new_page()
    for path, name in ((ADMIN, "15-admin-consumers-phone"),
                       (ADMIN + "/consumers/edit?key=" + KEY, "16-admin-consumer-edit-phone")):
        ppage.goto(a.url + path)
        # Nothing wider than the phone's screen: no sideways scrolling.
        assert ppage.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shot(ppage, name)
    admin_phone.close()
    user_ctx.close()
    ctx.close()


def test_pages_cannot_be_framed(browser, stacks):
    a, _ = stacks
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(a.url + "/login")
    assert page.locator("#username").count() == 1  # the page itself renders
    # set_content waits for the load event, which waits for the iframe's own load.
    page.set_content(f'<iframe id="f" src="{a.url}/login"></iframe>', wait_until="load")
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 1
    # The browser refused to render the framed page (X-Frame-Options / frame-ancestors).
    assert frames[0].locator("#username").count() == 0
    ctx.close()
