"""Oversight in the dashboard (issue 13), in a real Chromium against the real server: the
Activity view (the audit log, newest first, filtered, paged), the Admin tokens and Webhooks
pages for root (each secret shown once; a webhook's deliveries), and a scoped admin token
offered only what it may do. Every item is pictured at 1280×900 and 400×800 and checked over
the API as well; user input (names, URLs, descriptions, audit details) shows as text."""

import socket

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

XSS = "<img src=x onerror=window.__alerted=1>"

# The delivery thread polls and retries quickly, so a failed delivery shows within seconds.
FAST_WEBHOOKS = ("--webhook-poll-ms", "50", "--webhook-first-retry-ms", "100", "--webhook-timeout-ms", "500")


def new_app(server, app_id, name=None):
    body = {"id": app_id} if name is None else {"id": app_id, "name": name}
    status, reply = server.admin("POST", "/v1/apps", body)
    assert status == 201, reply


def new_token(server, **fields):
    status, created = server.admin("POST", "/v1/admin-tokens", fields)
    assert status == 201, created
    return created


def all_events(server, query=""):
    status, reply = server.admin("GET", f"/v1/audit?limit=1000{query}")
    assert status == 200, reply
    return reply["events"]


def shown_seqs(dashboard):
    return [int(row.get_attribute("data-seq")) for row in dashboard.find_all("#activity-body tr")]


def go(dashboard, fragment):
    """Follows a link of the page's navigation (or types the fragment, for one not offered)."""
    dashboard.driver.execute_script("location.hash = arguments[0];", fragment)
    dashboard.wait_idle()


def assert_markup_is_text(dashboard, server, *containers):
    assert dashboard.find_all(", ".join(f"{c} img" for c in containers)) == []
    assert dashboard.driver.execute_script("return window.__alerted === undefined;")
    dashboard.assert_no_dialog_or_alert()
    assert "GET /x " not in server.log()


def closed_port():
    """A port on 127.0.0.1 that nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Activity ------------------------------------------------------------------------------------


def test_activity_lists_the_audit_log_newest_first_filtered_and_paged(dashboard, server):
    # 108 events: more than a page (100), so Load older events is needed for the rest.
    for number in range(99):
        new_app(server, f"app-{number:02d}")
    new_app(server, "marked", XSS)
    for app in ("app-00", "marked"):
        for _ in range(4):
            assert server.admin("POST", f"/v1/apps/{app}/keys", {})[0] == 201
    expected = [event["seq"] for event in reversed(all_events(server))]
    assert len(expected) > 100

    dashboard.sign_in()
    dashboard.click("#nav-activity")
    dashboard.wait_visible("#activity-view")
    assert dashboard.find("#nav-activity").get_attribute("aria-current") == "page"
    assert not dashboard.find("#console-view").is_displayed()
    assert shown_seqs(dashboard) == expected[:100], "newest first, one page"
    dashboard.click("#activity-more")
    assert shown_seqs(dashboard) == expected, "the next page continues, older"
    assert not dashboard.find("#activity-more").is_displayed()
    newest = dashboard.find("#activity-body tr")
    assert "key.created" in newest.text and "Root token" in newest.text and "127.0.0.1" in newest.text

    # The app's name is its creator's input: the event's details show it as text.
    Select(dashboard.find("#activity-action")).select_by_visible_text("app.created")
    dashboard.find("#activity-app").send_keys("marked")
    dashboard.click("#activity-filter-form button[type=submit]")
    [row] = dashboard.find_all("#activity-body tr")
    assert XSS in row.find_element(By.CSS_SELECTOR, "code.details").text
    assert_markup_is_text(dashboard, server, "#activity-view")
    dashboard.screenshot_both("oversight-activity-filtered")

    dashboard.find("#activity-app").clear()
    Select(dashboard.find("#activity-action")).select_by_visible_text("key.created")
    dashboard.click("#activity-filter-form button[type=submit]")
    keys_created = [e["seq"] for e in reversed(all_events(server, "&action=key.created"))]
    assert shown_seqs(dashboard) == keys_created and len(keys_created) == 8

    Select(dashboard.find("#activity-action")).select_by_visible_text("Every action")
    dashboard.click("#activity-filter-form button[type=submit]")
    dashboard.screenshot_both("oversight-activity")
    # Back to the apps: the console returns.
    dashboard.click("#nav-apps")
    dashboard.wait_visible("#console-view")
    assert not dashboard.find("#activity-view").is_displayed()


# --- Admin tokens --------------------------------------------------------------------------------


def test_root_creates_an_admin_token_sees_it_once_lists_and_revokes_it(dashboard, server):
    new_app(server, "ci")
    dashboard.sign_in()
    dashboard.click("#nav-admin-tokens")
    dashboard.wait_visible("#create-token-form")
    assert dashboard.find("#admin-tokens-empty").is_displayed()

    # Nothing is sent without a name and a scope.
    dashboard.click("#create-token-form button[type=submit]")
    assert "name" in dashboard.find("#create-token-error").text
    dashboard.find("#token-name").send_keys(XSS)
    dashboard.click("#create-token-form button[type=submit]")
    assert "scope" in dashboard.find("#create-token-error").text
    assert server.admin("GET", "/v1/admin-tokens")[1]["admin_tokens"] == []

    for scope in ("keys:write", "audit:read"):
        dashboard.find(f'[id="token-scope-{scope}"]').click()
    dashboard.find("#token-apps").send_keys("ci")
    Select(dashboard.find("#token-max-key-lifetime")).select_by_visible_text("1 day")
    dashboard.find("#token-allowed-tags").send_keys("tag:ci")
    dashboard.find("#token-ephemeral-only").click()
    dashboard.click("#create-token-form button[type=submit]")
    dashboard.wait_visible("#new-token-panel")
    secret = dashboard.find("#new-token-value").get_attribute("value")
    assert secret.startswith("ent_")
    # The token shown works, with exactly what was chosen.
    status, info = server.request("GET", "/v1/server", token=secret)
    assert status == 200 and info["token"] == {"root": False, "scopes": ["keys:write", "audit:read"], "apps": ["ci"]}
    [listed] = server.admin("GET", "/v1/admin-tokens")[1]["admin_tokens"]
    assert (listed["max_key_lifetime"], listed["allowed_tags"], listed["ephemeral_only"]) == (86400, ["tag:ci"], True)
    row = dashboard.find(f'#admin-tokens-body tr[data-token-id="{listed["id"]}"]')
    assert XSS in row.text and listed["hint"] in row.text and "keys:write" in row.text and "ephemeral keys only" in row.text
    assert_markup_is_text(dashboard, server, "#admin-tokens-view")
    dashboard.screenshot_both("oversight-admin-token-created")

    # Hidden, it is gone from the page, and nothing kept it.
    dashboard.click("#dismiss-token")
    assert not dashboard.find("#new-token-panel").is_displayed()
    assert dashboard.find("#new-token-value").get_attribute("value") == ""
    assert secret not in str(dashboard.storage())

    text = dashboard.open_confirmation(row.find_element(By.CSS_SELECTOR, "button[aria-label^='Revoke']"))
    assert "refused from the moment" in text
    dashboard.confirm()
    assert "Revoked the admin token" in dashboard.status()
    assert server.request("GET", "/v1/server", token=secret)[0] == 401
    row = dashboard.find(f'#admin-tokens-body tr[data-token-id="{listed["id"]}"]')
    assert "Revoked" in row.text and row.find_elements(By.CSS_SELECTOR, "button") == []
    dashboard.screenshot_both("oversight-admin-tokens")


# --- Webhooks ------------------------------------------------------------------------------------


@pytest.mark.server_args(*FAST_WEBHOOKS)
def test_root_creates_a_webhook_sees_its_secret_once_and_its_failed_deliveries(dashboard, server):
    port = closed_port()
    # A raw "<" is no URL (the server refuses it): the markup is in the description.
    url = f"http://127.0.0.1:{port}/hook?x=%3Cb%3E1"
    dashboard.sign_in()
    dashboard.click("#nav-webhooks")
    dashboard.wait_visible("#create-webhook-form")

    # A URL the server refuses is explained in the form; nothing is created.
    dashboard.find("#webhook-url").send_keys("ftp://example.com/hook")
    dashboard.click("#create-webhook-form button[type=submit]")
    assert "Could not create the webhook" in dashboard.find("#create-webhook-error").text
    assert server.admin("GET", "/v1/webhooks")[1]["webhooks"] == []

    dashboard.find("#webhook-url").clear()
    dashboard.find("#webhook-url").send_keys(url)
    dashboard.find("#webhook-events").clear()
    dashboard.find("#webhook-events").send_keys("app.*, key.revoked")
    dashboard.find("#webhook-description").send_keys(XSS)
    dashboard.click("#create-webhook-form button[type=submit]")
    dashboard.wait_visible("#new-webhook-panel")
    secret = dashboard.find("#new-webhook-secret").get_attribute("value")
    assert secret.startswith("whsec_")
    [hook] = server.admin("GET", "/v1/webhooks")[1]["webhooks"]
    assert (hook["url"], hook["events"], hook["description"]) == (url, ["app.*", "key.revoked"], XSS)
    row = dashboard.find(f'#webhooks-body tr[data-webhook-id="{hook["id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".webhook-url").text == url
    assert row.find_element(By.CSS_SELECTOR, ".webhook-description").text == XSS
    assert_markup_is_text(dashboard, server, "#webhooks-view")
    dashboard.screenshot_both("oversight-webhook-created")
    dashboard.click("#dismiss-webhook-secret")
    assert dashboard.find("#new-webhook-secret").get_attribute("value") == ""

    # An event for it: the receiver's port is closed, so the attempt is a recorded failure.
    new_app(server, "watched")
    seq = [e["seq"] for e in all_events(server, "&action=app.created")][-1]

    def failed_delivery(_):
        dashboard.click(row.find_element(By.CSS_SELECTOR, "button[aria-label^='Deliveries']"))
        rows = dashboard.find_all(f'#deliveries-body tr[data-seq="{seq}"]')
        return rows and "No answer" in rows[0].text and "Not yet" in rows[0].text

    dashboard.wait(failed_delivery, "no failed delivery was shown")
    delivery = dashboard.find(f'#deliveries-body tr[data-seq="{seq}"]')
    [api_delivery] = server.admin("GET", f"/v1/webhooks/{hook['id']}/deliveries")[1]["deliveries"]
    assert api_delivery["last_error"] and api_delivery["last_error"][:20] in delivery.text
    assert url in dashboard.find("#deliveries-url").text
    dashboard.screenshot_both("oversight-webhook-deliveries")

    text = dashboard.open_confirmation(row.find_element(By.CSS_SELECTOR, "button[aria-label^='Delete']"))
    assert url in text
    dashboard.confirm()
    assert "Deleted the webhook" in dashboard.status()
    assert server.admin("GET", "/v1/webhooks")[1]["webhooks"] == []
    assert dashboard.find("#webhooks-empty").is_displayed()
    assert not dashboard.find("#deliveries-panel").is_displayed()


# --- A scoped token --------------------------------------------------------------------------------


def test_a_scoped_token_is_offered_only_what_it_may_do(dashboard, server):
    new_app(server, "ci")
    new_app(server, "other")
    created = new_token(server, name="provisioner", scopes=["keys:write", "keys:read", "audit:read"], apps=["ci"])
    status, key = server.admin("POST", "/v1/apps/ci/keys", {"reusable": True, "description": "runners"})
    assert status == 201
    server.login(key["key"], machine="runner-1")

    dashboard.sign_in(created["token"])
    # Only its pages: Activity yes, Admin tokens and Webhooks (root's) no.
    assert dashboard.find("#nav-activity").is_displayed()
    assert not dashboard.find("#nav-admin-tokens").is_displayed()
    assert not dashboard.find("#nav-webhooks").is_displayed()
    assert "keys:write" in dashboard.find("#signed-in-as").text
    # It may not list apps (no apps:read): its own app is offered; creating apps is not.
    assert [a.get_attribute("data-app-id") for a in dashboard.find_all("#app-list .app-link")] == ["ci"]
    assert not dashboard.find("#create-app-form").is_displayed()
    dashboard.click('#app-list .app-link[data-app-id="ci"]')
    dashboard.wait_text("#app-id-label", "ci")
    assert dashboard.find("#generate-open").is_displayed(), "keys:write generates keys"
    assert not dashboard.find("#delete-app").is_displayed(), "no apps:write"
    assert dashboard.find(f'#keys-body tr[data-key-id="{key["id"]}"] button[aria-label^="Revoke"]')
    assert "may not list machines" in dashboard.find("#machines-empty").text
    assert dashboard.alert_text() == ""
    dashboard.screenshot_both("oversight-scoped-token-app")

    # Its activity is its app's: the filter starts there and says why.
    dashboard.click("#nav-activity")
    dashboard.wait_visible("#activity-view")
    assert dashboard.find("#activity-app").get_attribute("value") == "ci"
    assert "ci only" in dashboard.find("#activity-app-hint").text
    apps_shown = {row.find_element(By.CSS_SELECTOR, "td[data-label=App]").text for row in dashboard.find_all("#activity-body tr")}
    assert apps_shown == {"ci"}
    dashboard.screenshot_both("oversight-scoped-token-activity")

    # Another app, typed in the filter, is not asked for: the filter returns to its own.
    dashboard.find("#activity-app").clear()
    dashboard.find("#activity-app").send_keys("other")
    dashboard.click("#activity-filter-form button[type=submit]")
    assert dashboard.find("#activity-app").get_attribute("value") == "ci"
    # What it may not do anyway (a link to another app) is refused by the server and
    # explained, not a broken page.
    go(dashboard, "#/apps/other")
    assert "may not do that" in dashboard.alert_text() and "forbidden, HTTP 403" in dashboard.alert_text()
    assert not dashboard.find("#app-detail").is_displayed()
    go(dashboard, "#/webhooks")
    assert not dashboard.find("#webhooks-view").is_displayed()
    assert "may not open that page" in dashboard.alert_text()
    assert dashboard.find("#console-view").is_displayed()
    dashboard.screenshot_both("oversight-scoped-token-refused")


def test_a_read_only_token_sees_lists_without_actions(dashboard, server):
    new_app(server, "ci")
    status, key = server.admin("POST", "/v1/apps/ci/keys", {"reusable": True})
    assert status == 201
    server.login(key["key"], machine="runner-1")
    created = new_token(server, name="auditor", scopes=["apps:read", "keys:read", "machines:read"])

    dashboard.sign_in(created["token"])
    assert not dashboard.find("#nav-activity").is_displayed(), "no audit:read"
    dashboard.click('#app-list .app-link[data-app-id="ci"]')
    dashboard.wait_text("#app-id-label", "ci")
    assert dashboard.key_row(key["id"]).find_elements(By.CSS_SELECTOR, "button") == []
    assert len(dashboard.find_all("#machines-body tr")) == 1
    assert dashboard.find_all("#machines-body button") == []
    for hidden in ("#generate-open", "#delete-app", "#create-app-form"):
        assert not dashboard.find(hidden).is_displayed(), hidden
    assert dashboard.alert_text() == ""
    dashboard.screenshot_both("oversight-read-only-token")
