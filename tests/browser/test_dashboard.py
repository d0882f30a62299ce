"""The admin dashboard in a real headless Chromium against the real server: every test signs in
with the admin token the server printed, acts through the page as a person would, and checks
the outcome both on the page and, where it matters, over the HTTP API."""

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

KEY_PATTERN = re.compile(r"^ena_[0-9A-Za-z]{36}$")
XSS = "<img src=x onerror=alert(1)>"


def keys_of(server, app_id):
    status, reply = server.admin("GET", f"/v1/apps/{app_id}/keys")
    assert status == 200, reply
    return reply["keys"]


def key_by_hint(server, app_id, secret):
    hint = f"{secret[:8]}…{secret[-4:]}"
    [key] = [key for key in keys_of(server, app_id) if key["hint"] == hint]
    return key


# --- signing in ----------------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_token_then_accepts_the_right_one(dashboard, server):
    dashboard.open()
    dashboard.screenshot("sign-in")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#admin-token")

    dashboard.find("#admin-token").send_keys("enadm_not-the-right-token" + Keys.ENTER)
    error = dashboard.wait_text("#sign-in-error", "refused this admin token")
    assert dashboard.find("#sign-in-view").is_displayed()
    assert not dashboard.find("#console-view").is_displayed()
    assert dashboard.storage() == {"session": {}, "local": {}, "cookies": ""}, error
    dashboard.screenshot("sign-in-refused")

    # An empty field is caught before anything is sent.
    dashboard.find("#admin-token").clear()
    dashboard.find("#sign-in-form button[type=submit]").click()
    dashboard.wait_text("#sign-in-error", "Enter the admin token")

    # Keyboard only: the field has the focus; type and press Enter.
    dashboard.find("#admin-token").send_keys(server.admin_token + Keys.ENTER)
    dashboard.wait_visible("#console-view")
    assert dashboard.find("#sign-out").is_displayed()
    # The token is kept for this tab only: in sessionStorage, never in a URL or a cookie.
    assert dashboard.storage() == {
        "session": {"authkeys.adminToken": server.admin_token},
        "local": {},
        "cookies": "",
    }
    assert server.admin_token not in dashboard.driver.current_url
    assert server.admin_token not in server.log()

    # A reload in the same tab stays signed in.
    dashboard.reload()
    dashboard.wait_visible("#console-view")

    dashboard.find("#sign-out").click()
    dashboard.wait_visible("#sign-in-view")
    assert dashboard.storage()["session"] == {}
    assert "Signed out" in dashboard.status()


def test_a_token_the_server_stops_accepting_returns_to_sign_in(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("web")
    # The token changes under the tab (a restart with another AUTHKEYS_ADMIN_TOKEN looks the same).
    dashboard.driver.execute_script("sessionStorage.setItem('authkeys.adminToken', 'enadm_revoked');")
    dashboard.find("#refresh").click()
    dashboard.wait_visible("#sign-in-view")
    assert "refused the admin token" in dashboard.find("#sign-in-error").text
    assert dashboard.storage()["session"] == {}
    # Signing in again brings back the same app.
    dashboard.find("#admin-token").send_keys(server.admin_token + Keys.ENTER)
    dashboard.wait_text("#app-id-label", "web")
