"""A consumer's failure history in a real browser, against a real gunicorn front end on
PostgreSQL and the real Redis (docs/admin.md, "Failure history"): a client that signs
with a wrong secret is refused, the admin opens the consumer's page and sees the refusal
by problem, in the list and in the chart (inline SVG under the strict CSP: the browser
reports no violation), opens the debugger from it, and the accepted request of the same
client arrives in the chart once its server process writes its counts. The installed
`oauthledger` script shows the same history and debugs the refusal by its id.
"""

from __future__ import annotations

import json

import requests
from requests_oauthlib import OAuth1

from tests.browser.conftest import DESKTOP, shot
from tests.e2e.servers import PASSWORD, make_stack, wait_until

KEY = "label-printer"
SECRET = "label-printer-shared-secret"
WRONG = "not-the-label-printer-secret"
EDIT = "/plugins/servlet/oauth/admin/consumers/edit"
API = "/rest/oauthledger/1"


def test_the_failure_history_in_a_browser(browser) -> None:
    stack = make_stack(servers=1, worker=False)
    try:
        stack.cli_many([
            (["user", "add", "admin", "--admin", "--password-stdin"], PASSWORD + "\n"),
            (["user", "add", "alice", "--password-stdin"], PASSWORD + "\n")])
        stack.cli("consumer", "add", KEY, "--name", "Label Printer", "--secret", SECRET,
                  "--signature-methods", "HMAC-SHA1", "--two-legged-user", "alice")
        resource = stack.url + "/rest/api/2/myself"
        # Two-legged (the consumer acts as alice): accepted.
        assert requests.get(resource, auth=OAuth1(KEY, SECRET), timeout=30).status_code == 200
        refused = requests.get(resource, auth=OAuth1(KEY, WRONG), timeout=30)
        assert refused.status_code == 401
        rid = refused.headers["X-Request-Id"]

        ctx = browser.new_context(viewport=DESKTOP)
        page = ctx.new_page()
        violations: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.goto(f"{stack.url}{EDIT}?key={KEY}")
        page.fill("#username", "admin")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{stack.url}{EDIT}?key={KEY}")

        row = page.locator(f"#failure-list tr[data-request-id='{rid}']")
        assert row.count() == 1
        assert row.get_attribute("data-problem") == "signature_invalid"
        problem = page.locator("#failure-problems tr[data-problem='signature_invalid'] td")
        assert problem.nth(1).inner_text() == "1" and problem.nth(2).inner_text() == "1"
        assert page.locator("#failure-chart g.hour").count() == 24
        refused_bar = page.locator("#failure-chart rect.refused")
        assert refused_bar.count() == 1
        box = refused_bar.first.bounding_box()
        assert box is not None and box["height"] > 0 and box["width"] > 0
        row.locator("summary").click()
        assert row.locator("pre.pem").is_visible()  # the base string
        shot(page, "failure-history-consumer-page")
        row.get_by_role("link", name="Debug this request").click()
        page.wait_for_selector("#report")
        assert page.locator("#history-source").is_visible()
        assert page.locator("#report").get_attribute("data-verdict") == "invalid"
        shot(page, "failure-history-debugger")
        assert WRONG not in page.content() and SECRET not in page.content()
        assert violations == []

        # The accepted request reaches the chart when its process writes its counts.
        session = requests.Session()
        session.auth = ("admin", PASSWORD)

        def accepted() -> bool:
            hours = session.get(f"{stack.url}{API}/consumer-failures/{KEY}",
                                timeout=30).json()["hours"]
            return sum(h["accepted"] for h in hours) == 1

        wait_until(accepted, "the accepted count to be written", timeout=60)

        text = stack.cli("consumer", "failures", KEY).stdout
        assert rid in text and "signature_invalid" in text
        report = json.loads(stack.cli("debug", "signature", "--request-id", rid,
                                      "--format", "json").stdout)
        assert report["verdict"] == "invalid" and report["history"]["requestId"] == rid
        assert [f["code"] for f in report["diagnosis"]] == ["no_match"]
        for out in (text, json.dumps(report)):
            assert WRONG not in out and SECRET not in out
        ctx.close()
    finally:
        stack.close()
