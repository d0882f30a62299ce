"""The admin dashboard in a real headless Chromium against the real server: every test signs in
with the admin token the server printed, acts through the page as a person would, and checks
the outcome both on the page and, where it matters, over the HTTP API."""

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

KEY_PATTERN = re.compile(r"^ena_[0-9A-Za-z]{36}$")
XSS = "<img src=x onerror=alert(1)>"


from dashboard import key_by_hint, parse_time


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
    # So is one that could not even be sent in a header.
    dashboard.find("#admin-token").send_keys("enadm_ünïcode token")
    dashboard.click("#sign-in-form button[type=submit]")
    dashboard.wait_text("#sign-in-error", "plain ASCII text")
    dashboard.find("#admin-token").clear()

    # Keyboard only: the field has the focus; type and press Enter.
    dashboard.find("#admin-token").send_keys(server.admin_token + Keys.ENTER)
    dashboard.wait_visible("#console-view")
    dashboard.wait_idle()
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

    dashboard.click("#sign-out")
    dashboard.wait_visible("#sign-in-view")
    assert dashboard.storage()["session"] == {}
    assert "Signed out" in dashboard.status()


def test_a_token_the_server_stops_accepting_returns_to_sign_in(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("web")
    # The token changes under the tab (a restart with another AUTHKEYS_ADMIN_TOKEN looks the same).
    dashboard.driver.execute_script("sessionStorage.setItem('authkeys.adminToken', 'enadm_revoked');")
    dashboard.click("#refresh")
    dashboard.wait_visible("#sign-in-view")
    assert "refused the admin token" in dashboard.find("#sign-in-error").text
    assert dashboard.storage()["session"] == {}
    # Signing in again brings back the same app.
    dashboard.find("#admin-token").send_keys(server.admin_token + Keys.ENTER)
    dashboard.wait_visible("#console-view")
    dashboard.wait_idle()
    assert dashboard.find("#app-id-label").text == "web"


# --- apps ----------------------------------------------------------------------------------------


def test_create_select_and_refuse_a_duplicate_app(dashboard, server):
    dashboard.sign_in()
    assert dashboard.find("#apps-empty").is_displayed()
    dashboard.screenshot("apps-empty")

    dashboard.create_and_open_app("web", "Web frontend")
    assert "Created app web" in dashboard.status()
    assert dashboard.find("#app-title").text == "Web frontend"
    assert dashboard.driver.current_url.endswith("#/apps/web")
    assert server.admin("GET", "/v1/apps/web")[1]["name"] == "Web frontend"

    dashboard.create_and_open_app("ci")
    assert dashboard.find("#app-title").text == "ci"
    links = dashboard.find_all("#app-list .app-link")
    assert [link.get_attribute("data-app-id") for link in links] == ["ci", "web"] or [
        link.get_attribute("data-app-id") for link in links
    ] == ["web", "ci"]
    current = [link.get_attribute("data-app-id") for link in links if link.get_attribute("aria-current") == "page"]
    assert current == ["ci"]

    # Selecting another app from the list shows it.
    [web] = [link for link in links if link.get_attribute("data-app-id") == "web"]
    dashboard.click(web)
    assert dashboard.find("#app-title").text == "Web frontend"

    # The API's refusal is shown as a clear message, and nothing changes.
    dashboard.create_app("web")
    message = dashboard.wait_text("#alert", "already exists")
    assert "Could not create app web" in message and "app_exists" in message
    assert len(dashboard.find_all("#app-list .app-link")) == 2


def test_delete_app_says_what_it_revokes_and_logs_its_machines_out(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("doomed")
    first = dashboard.generate_key("runner", reusable=True)
    dashboard.dismiss_key()
    dashboard.generate_key("spare")
    dashboard.dismiss_key()
    sessions = [server.login(first, "runner-1"), server.login(first, "runner-2")]

    text = dashboard.open_confirmation(dashboard.find("#delete-app"))
    assert "revokes its 2 active auth keys and logs out its 2 machines" in text
    assert "cannot be undone" in text
    # The destructive button stays disabled until the app id is typed; focus is in that field.
    assert not dashboard.find("#confirm-ok").is_enabled()
    assert dashboard.driver.switch_to.active_element == dashboard.find("#confirm-typed-input")
    dashboard.screenshot("delete-app-confirmation", whole_page=False)
    dashboard.find("#confirm-typed-input").send_keys("doome")
    assert not dashboard.find("#confirm-ok").is_enabled()
    dashboard.find("#confirm-typed-input").send_keys("d")
    dashboard.confirm()

    dashboard.wait_text("#status", "Deleted app doomed: 2 keys revoked, 2 machines logged out")
    assert dashboard.find("#no-app").is_displayed()
    assert dashboard.find_all("#app-list .app-link") == []
    assert server.admin("GET", "/v1/apps/doomed")[0] == 404
    assert [server.whoami_status(session) for session in sessions] == [401, 401]


# --- keys ----------------------------------------------------------------------------------------


def test_generates_each_of_the_four_key_types(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("fleet")
    cases = [
        # description, reusable, ephemeral, expiry choice, expected badges, expires_in seconds
        ("single", False, False, "Never", ["Single-use"], None),
        ("reusable", True, False, "In 1 day", ["Reusable"], 86400),
        ("ephemeral", False, True, "In 1 hour", ["Single-use", "Ephemeral"], 3600),
        ("both", True, True, "In 90 days", ["Reusable", "Ephemeral"], 90 * 86400),
    ]
    for description, reusable, ephemeral, expiry, badges, expires_in in cases:
        secret = dashboard.generate_key(description, reusable, ephemeral, expiry)
        assert KEY_PATTERN.match(secret), secret
        key = key_by_hint(server, "fleet", secret)
        assert (key["description"], key["reusable"], key["ephemeral"]) == (description, reusable, ephemeral)
        if expires_in is None:
            assert key["expires_at"] is None
        else:
            lifetime = parse_time(key["expires_at"]) - parse_time(key["created_at"])
            assert abs(lifetime - expires_in) < 5, (key, expires_in)
        row = dashboard.key_row(key["id"])
        assert [badge.text for badge in row.find_elements(By.CSS_SELECTOR, ".badge")] == badges
        assert key["hint"] in row.text
        if reusable and ephemeral:
            dashboard.screenshot("key-generated")
        # The key really works, with the type it was given.
        status, verdict = server.request("POST", "/v1/keys/verify", {"key": secret})
        assert (status, verdict["valid"], verdict["reusable"], verdict["ephemeral"]) == (200, True, reusable, ephemeral)
        dashboard.dismiss_key()
    assert len(dashboard.key_rows()) == 4
    dashboard.screenshot("keys")


def test_the_key_is_shown_once_and_gone_after_dismissing_or_reloading(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("once")
    secret = dashboard.generate_key("shown once", reusable=True)
    panel = dashboard.find("#new-key-panel")
    assert "Store it now in a vault" in panel.text
    assert "cannot be shown again" in panel.text
    command = dashboard.find("#new-key-command").get_attribute("value")
    assert command == f"AUTHKEYS_AUTH_KEY={secret} authkeys login --server={server.url}"
    # Focus moves to the panel so a screen reader announces it.
    assert dashboard.driver.switch_to.active_element == dashboard.find("#new-key-title")
    assert secret not in repr(dashboard.storage())
    assert secret not in server.log()

    dashboard.dismiss_key()
    assert secret not in dashboard.driver.page_source
    assert secret not in dashboard.driver.execute_script(
        "return [...document.querySelectorAll('input, textarea')].map(i => i.value).join(' ');"
    )
    assert "cannot be shown again" in dashboard.status()

    secret = dashboard.generate_key("lost on reload")
    dashboard.reload()
    dashboard.wait_text("#app-id-label", "once")
    assert not dashboard.find("#new-key-panel").is_displayed()
    assert secret not in dashboard.driver.page_source
    assert secret not in repr(dashboard.storage())
    # The key still exists and works; only its hint is on the page.
    key = key_by_hint(server, "once", secret)
    assert key["hint"] in dashboard.key_row(key["id"]).text
    # Nothing the page can ask for returns the full key again.
    status, reply = server.admin("GET", f"/v1/apps/once/keys/{key['id']}")
    assert status == 200 and secret not in repr(reply)


def test_copy_buttons_put_the_key_and_the_command_on_the_clipboard(dashboard, server):
    dashboard.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    dashboard.sign_in()
    dashboard.create_and_open_app("clip")
    secret = dashboard.generate_key("copied")

    dashboard.click("#copy-key")
    dashboard.wait_text("#status", "Copied the auth key")
    assert dashboard.find("#copy-key").text == "Copied"
    assert read_clipboard(dashboard) == secret

    dashboard.click("#copy-command")
    dashboard.wait_text("#status", "Copied the login command")
    assert read_clipboard(dashboard) == f"AUTHKEYS_AUTH_KEY={secret} authkeys login --server={server.url}"

    # What was copied pastes as the key, as a person would paste it elsewhere.
    dashboard.click("#copy-key")
    dashboard.wait_text("#status", "Copied the auth key")
    field = dashboard.find("#app-name")
    field.clear()
    field.send_keys(Keys.CONTROL, "v")
    assert field.get_attribute("value") == secret
    field.clear()


def read_clipboard(dashboard):
    return dashboard.driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('error: ' + e));"
    )


def test_revoke_key_confirms_how_many_machines_it_logs_out_and_they_are_rejected(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("ci")
    secret = dashboard.generate_key("ci runners", reusable=True)
    dashboard.dismiss_key()
    keep = dashboard.generate_key("keep me")
    dashboard.dismiss_key()
    runner = server.login(secret, "runner-7")
    other_runner = server.login(secret, "runner-8")
    bystander = server.login(keep, "bystander")
    assert server.whoami_status(runner) == 200

    dashboard.refresh()
    key = key_by_hint(server, "ci", secret)
    row = dashboard.key_row(key["id"])
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Machines"]').text == "2"
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Uses"]').text == "2"

    # Cancelling (here with Escape) changes nothing and gives the focus back.
    delete = dashboard.revoke_button(key["id"])
    text = dashboard.open_confirmation(delete)
    assert "Revoke this auth key?" in text
    assert "log out 2 machines" in text and "ci runners" in text
    assert dashboard.find("#confirm-ok").text == "Revoke key and log out 2 machines"
    assert dashboard.driver.switch_to.active_element == dashboard.find("#confirm-cancel")
    dashboard.screenshot("delete-key-confirmation", whole_page=False)
    dashboard.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    dashboard.wait_hidden("#confirm-dialog")
    dashboard.wait_idle()
    assert dashboard.driver.switch_to.active_element == delete
    assert server.whoami_status(runner) == 200

    dashboard.open_confirmation(delete)
    dashboard.confirm()
    dashboard.wait_text("#status", "2 machines logged out")
    assert [row.get_attribute("data-key-id") for row in dashboard.key_rows()] != [] and key["id"] not in [
        row.get_attribute("data-key-id") for row in dashboard.key_rows()
    ]
    # The machines that key logged in are rejected from now on; the other key's is not.
    assert server.whoami_status(runner) == 401
    assert server.whoami_status(other_runner) == 401
    assert server.whoami_status(bystander) == 200

    # With revoked keys shown, it is listed as revoked, without a Revoke button.
    dashboard.click("#show-revoked")
    row = dashboard.key_row(key["id"])
    assert "Revoked" in [badge.text for badge in row.find_elements(By.CSS_SELECTOR, ".badge")]
    assert row.find_elements(By.CSS_SELECTOR, "button") == []


def test_revoking_a_key_someone_else_already_revoked_explains_it(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("race")
    secret = dashboard.generate_key("revoked elsewhere")
    dashboard.dismiss_key()
    key = key_by_hint(server, "race", secret)
    assert server.admin("DELETE", f"/v1/apps/race/keys/{key['id']}")[0] == 204

    dashboard.open_confirmation(dashboard.revoke_button(key["id"]))
    dashboard.confirm()
    message = dashboard.wait_text("#alert", "no longer exists or was already revoked")
    assert "key_not_found" in message
    # The list is reloaded to show the truth.
    dashboard.wait(lambda d: dashboard.key_rows() == [], "the revoked key is still listed")
    assert dashboard.find("#keys-empty").is_displayed()


def test_a_description_that_looks_like_html_is_shown_as_text(dashboard, server):
    status, _ = server.admin("POST", "/v1/apps", {"id": "xss", "name": "<script>alert(2)</script>"})
    assert status == 201
    dashboard.sign_in()
    # A trap: if any markup ran, the page would call alert.
    dashboard.driver.execute_script("window.alert = () => { window.__alerted = true; };")
    dashboard.click('#app-list .app-link[data-app-id="xss"]')
    assert dashboard.find("#app-id-label").text == "xss"
    assert dashboard.find("#app-title").text == "<script>alert(2)</script>"

    secret = dashboard.generate_key(XSS)
    dashboard.dismiss_key()
    key = key_by_hint(server, "xss", secret)
    assert key["description"] == XSS
    server.login(secret, "<b>machine</b>")
    dashboard.refresh()

    row = dashboard.key_row(key["id"])
    assert row.find_element(By.CSS_SELECTOR, ".key-description").text == XSS
    assert dashboard.find_all("#app-view img") == []
    assert dashboard.find_all("#app-view b, #app-list script, #app-view script") == []
    assert "<b>machine</b>" in dashboard.find("#machines-body").text
    text = dashboard.open_confirmation(dashboard.revoke_button(key["id"]))
    assert XSS in text
    assert dashboard.find_all("#confirm-dialog img") == []
    dashboard.cancel()
    dashboard.screenshot("xss-as-text")

    assert dashboard.driver.execute_script("return window.__alerted === undefined;")
    dashboard.assert_no_dialog_or_alert()
    # The browser never even tried to load the image.
    assert "GET /x " not in server.log()


# --- machines ------------------------------------------------------------------------------------


def test_machines_list_and_log_out(dashboard, server):
    dashboard.sign_in()
    dashboard.create_and_open_app("fleet")
    ephemeral_key = dashboard.generate_key("short-lived", reusable=True, ephemeral=True)
    dashboard.dismiss_key()
    lasting_key = dashboard.generate_key("lasting")
    dashboard.dismiss_key()
    assert dashboard.find("#machines-empty").is_displayed()

    ephemeral = server.login(ephemeral_key, "ephemeral-runner")
    kept = server.login(ephemeral_key, "kept-runner")
    lasting = server.login(lasting_key, "build-box")
    assert server.whoami_status(kept) == 200  # sets its "last seen"
    dashboard.refresh()

    machines = {m["name"]: m for m in server.admin("GET", "/v1/apps/fleet/machines")[1]["machines"]}
    assert set(machines) == {"ephemeral-runner", "kept-runner", "build-box"}
    ephemeral_row = dashboard.machine_row(machines["ephemeral-runner"]["id"])
    cells = {c.get_attribute("data-label"): c.text for c in ephemeral_row.find_elements(By.CSS_SELECTOR, "td")}
    assert cells["Name"].startswith("ephemeral-runner")
    assert cells["Key"] == "short-lived\n" + key_by_hint(server, "fleet", ephemeral_key)["hint"]
    assert re.fullmatch(r".*2\d\d\d.* \(((59|60) min left|1 h left)\)", cells["Time left"]), cells
    assert cells["Last seen"] == "Never"
    assert cells["Logged in"]
    lasting_row = dashboard.machine_row(machines["build-box"]["id"])
    assert lasting_row.find_element(By.CSS_SELECTOR, '[data-label="Time left"]').text == "No limit"
    dashboard.screenshot("machines")

    text = dashboard.open_confirmation(ephemeral_row.find_element(By.CSS_SELECTOR, "button"))
    assert "Log out ephemeral-runner?" in text
    dashboard.confirm()
    dashboard.wait_text("#status", "Logged out ephemeral-runner")
    remaining = [row.get_attribute("data-machine-id") for row in dashboard.find_all("#machines-body tr")]
    assert sorted(remaining) == sorted([machines["kept-runner"]["id"], machines["build-box"]["id"]])
    assert server.whoami_status(ephemeral) == 401
    assert server.whoami_status(kept) == 200
    assert server.whoami_status(lasting) == 200


# --- the page as a whole -------------------------------------------------------------------------


def test_everything_can_be_done_with_the_keyboard(dashboard, server):
    dashboard.open()
    dashboard.press(server.admin_token, Keys.ENTER)
    dashboard.wait_visible("#console-view")
    dashboard.wait_idle()

    dashboard.tab_to("#app-id")
    dashboard.press("keys", Keys.TAB, "Keyboard app", Keys.ENTER)
    dashboard.wait_idle()
    assert dashboard.find("#app-title").text == "Keyboard app"
    assert dashboard.driver.switch_to.active_element == dashboard.find("#app-title")

    dashboard.tab_to("#generate-open")
    dashboard.press(Keys.ENTER)
    dashboard.wait_visible("#generate-dialog")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#key-description")
    # Description, Reusable (which shows its use limit, skipped), Ephemeral, then Enter.
    dashboard.press("typed", Keys.TAB, Keys.SPACE, Keys.TAB, Keys.TAB, Keys.SPACE, Keys.ENTER)
    dashboard.wait_visible("#new-key-panel")
    dashboard.wait_idle()
    assert dashboard.driver.switch_to.active_element == dashboard.find("#new-key-title")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    key = key_by_hint(server, "keys", secret)
    assert (key["description"], key["reusable"], key["ephemeral"]) == ("typed", True, True)
    dashboard.tab_to("#dismiss-key")
    dashboard.press(Keys.ENTER)
    dashboard.wait_hidden("#new-key-panel")
    dashboard.wait_idle()

    server.login(secret, "keyboard-machine")
    dashboard.tab_to("#refresh")
    dashboard.press(Keys.ENTER)
    dashboard.wait_text("#status", "Refreshed")
    dashboard.tab_to(f'#keys-body tr[data-key-id="{key["id"]}"] button[aria-label^="Revoke"]')
    dashboard.press(Keys.ENTER)
    dashboard.wait_visible("#confirm-dialog")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#confirm-cancel")
    dashboard.press(Keys.TAB)
    assert dashboard.driver.switch_to.active_element == dashboard.find("#confirm-ok")
    dashboard.press(Keys.ENTER)
    dashboard.wait_hidden("#confirm-dialog")
    dashboard.wait_text("#status", "1 machine logged out")
    assert server.admin("GET", f"/v1/apps/keys/keys/{key['id']}")[1]["revoked_at"] is not None


def test_every_control_is_labelled(dashboard):
    dashboard.sign_in()
    dashboard.create_and_open_app("labels")
    dashboard.generate_key("labelled")
    unlabelled = dashboard.driver.execute_script(
        """
        return [...document.querySelectorAll('input, select, button, textarea')]
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !(e.tagName === 'BUTTON' && e.textContent.trim()))
          .map(e => e.outerHTML);
        """
    )
    assert unlabelled == []
    assert dashboard.find("#status").get_attribute("aria-live") == "polite"
    assert dashboard.find("#alert").get_attribute("role") == "alert"


# --- long lists ----------------------------------------------------------------------------------

LIST_PATH = re.compile(r"^/v1/apps(/[^/?]+/(keys|machines))?(\?|$)")


def test_long_lists_load_a_page_at_a_time(dashboard, server):
    """Apps, keys and machines come 100 at a time, "Load more" fetches the next page, and the
    page never asks for a list without a limit."""
    for n in range(102):
        assert server.admin("POST", "/v1/apps", {"id": f"app-{n:03}"})[0] == 201
    status, reusable = server.admin("POST", "/v1/apps/app-000/keys", {"reusable": True})
    assert status == 201, reusable
    for _ in range(100):
        assert server.admin("POST", "/v1/apps/app-000/keys", {})[0] == 201
    for _ in range(101):
        server.login(reusable["key"])

    dashboard.sign_in()
    # Every request the page makes from here on, to check that lists are asked for by page.
    dashboard.driver.execute_script(
        "window.fetched = []; const real = window.fetch;"
        "window.fetch = (path, init) => { window.fetched.push(path); return real(path, init); };"
    )
    assert len(dashboard.find_all("#app-list li")) == 100
    dashboard.click("#apps-more")
    assert len(dashboard.find_all("#app-list li")) == 102
    assert not dashboard.find("#apps-more").is_displayed()

    first_app = dashboard.find('#app-list button[data-app-id="app-000"]')
    dashboard.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", first_app)
    dashboard.click(first_app)
    dashboard.wait_text("#app-id-label", "app-000")
    assert len(dashboard.key_rows()) == 100
    assert len(dashboard.find_all("#machines-body tr")) == 100
    for more in ("#keys-more", "#machines-more"):
        assert dashboard.find(more).is_displayed(), more
    dashboard.click("#keys-more")
    assert len(dashboard.key_rows()) == 101
    assert not dashboard.find("#keys-more").is_displayed()
    assert dashboard.key_row(reusable["id"]).is_displayed(), "the oldest key comes last"
    dashboard.click("#machines-more")
    assert len(dashboard.find_all("#machines-body tr")) == 101
    assert not dashboard.find("#machines-more").is_displayed()
    dashboard.screenshot("long-lists")

    lists = [path for path in dashboard.driver.execute_script("return window.fetched;") if LIST_PATH.match(path)]
    assert len(lists) >= 5, lists
    for path in lists:
        assert "limit=100" in path, f"{path} asks for a list without a limit"
    dashboard.assert_no_console_errors()
