"""What a new user tripped over in the dashboard (issue 14), each checked in a real Chromium and
pictured at 1280×900 and 400×800: the key list comes first and the generate form is a dialog;
the words are the CLI's and the API's; machines name their key; dates carry their year and
time zone; a phone-sized window shows the app first in short cards; a bad app id is explained
in our words under its field."""

import re
from datetime import datetime, timedelta

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from dashboard import key_by_hint, keys_of


def create_app_with_keys(server, app_id, descriptions, name=None):
    """Creates an app and one key per description (newest last) over the API; returns the keys
    as created (each with its full secret under "key")."""
    body = {"id": app_id} if name is None else {"id": app_id, "name": name}
    assert server.admin("POST", "/v1/apps", body)[0] == 201
    created = []
    for description in descriptions:
        status, key = server.admin("POST", f"/v1/apps/{app_id}/keys", {"description": description, "reusable": True})
        assert status == 201, key
        created.append(key)
    return created


def rect(dashboard, element):
    return dashboard.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", element)


def card_rows(dashboard, row):
    """How many visual rows a table row's cells take: the distinct tops of its visible cells."""
    tops = dashboard.driver.execute_script(
        "return [...arguments[0].cells].filter(c => c.offsetParent)"
        ".map(c => Math.round(c.getBoundingClientRect().top));",
        row,
    )
    return len(set(tops))


# --- the key list first, the generate form in a dialog -------------------------------------------


def test_the_key_list_comes_first_and_generate_opens_a_dialog(dashboard, server):
    create_app_with_keys(server, "web", ["ci runners", "staging deploys", "laptop"])
    dashboard.sign_in_to_app("web")

    # The whole key list is on the first screen at 1280×900; no form stands before it.
    assert not dashboard.find("#generate-form").is_displayed()
    assert len(dashboard.key_rows()) == 3
    table = rect(dashboard, dashboard.find("#keys-table"))
    assert table["bottom"] <= 900, f"the key list ends at {table['bottom']}px, below the fold"
    dashboard.screenshot_both("key-list-first")

    # "Generate key" opens the form as a modal dialog, focused on its first field.
    dashboard.open_generate_dialog()
    assert dashboard.driver.execute_script("return document.getElementById('generate-dialog').matches(':modal');")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#key-description")
    assert "For the app web" in dashboard.find("#generate-dialog").text
    dashboard.screenshot_both("generate-dialog", whole_page=False)

    # Escape and Cancel each close it without creating anything; focus returns to the button.
    dashboard.find("#key-description").send_keys("abandoned")
    dashboard.press(Keys.ESCAPE)
    dashboard.wait_hidden("#generate-dialog")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#generate-open")
    dashboard.open_generate_dialog()
    assert dashboard.find("#key-description").get_attribute("value") == "", "a reopened form starts empty"
    dashboard.click("#generate-cancel")
    dashboard.wait_hidden("#generate-dialog")
    assert dashboard.driver.switch_to.active_element == dashboard.find("#generate-open")
    assert len(keys_of(server, "web")) == 3

    # Generating closes the dialog and shows the key once, above the list.
    secret = dashboard.generate_key("from the dialog")
    assert key_by_hint(server, "web", secret)["description"] == "from the dialog"
    assert not dashboard.find("#generate-dialog").is_displayed()
    assert dashboard.driver.switch_to.active_element == dashboard.find("#new-key-title")
    assert rect(dashboard, dashboard.find("#new-key-panel"))["bottom"] <= rect(dashboard, dashboard.find("#keys-table"))["top"]
    assert len(dashboard.key_rows()) == 4
    dashboard.screenshot_both("generated-from-dialog")
    dashboard.dismiss_key()
    assert dashboard.driver.switch_to.active_element == dashboard.find("#generate-open")

    # A refusal is said inside the dialog (the page's message line is behind it), and what
    # was typed stays.
    dashboard.open_generate_dialog()
    dashboard.find("#key-description").send_keys("too late")
    assert server.admin("DELETE", "/v1/apps/web")[0] == 204
    dashboard.click("#generate-form button[type=submit]")
    error = dashboard.wait_text("#generate-error", "no longer exists")
    assert "app_not_found" in error
    assert dashboard.find("#generate-dialog").is_displayed()
    assert dashboard.find("#key-description").get_attribute("value") == "too late"
    dashboard.screenshot_both("generate-dialog-refused", whole_page=False)


# --- one vocabulary with the CLI and the API -----------------------------------------------------


def test_keys_are_revoked_in_the_cli_and_api_words_and_show_when(dashboard, server):
    create_app_with_keys(server, "words", ["kept", "to revoke"])
    dashboard.sign_in_to_app("words")
    to_revoke = next(key for key in keys_of(server, "words") if key["description"] == "to revoke")

    buttons = dashboard.find_all("#keys-body button")
    assert [button.text for button in buttons] == ["Rotate", "Revoke", "Rotate", "Revoke"]
    assert dashboard.find("label[for=show-revoked]").text == "Show revoked keys"
    text = dashboard.open_confirmation(dashboard.revoke_button(to_revoke["id"]))
    assert "Revoke this auth key?" in text and dashboard.find("#confirm-ok").text == "Revoke key"
    dashboard.confirm()
    dashboard.wait_text("#status", "Revoked the key “to revoke”")

    dashboard.click("#show-revoked")
    revoked_at = server.admin("GET", f"/v1/apps/words/keys/{to_revoke['id']}")[1]["revoked_at"]
    assert revoked_at
    row = dashboard.key_row(to_revoke["id"])
    assert "Revoked" in [badge.text for badge in row.find_elements(By.CSS_SELECTOR, ".badge")]
    shown = row.find_element(By.CSS_SELECTOR, ".revoked-at")
    assert shown.text.startswith("Revoked ") and str(parse_year(revoked_at)) in shown.text, shown.text
    assert shown.find_element(By.CSS_SELECTOR, "time").get_attribute("datetime") == revoked_at
    assert row.find_elements(By.CSS_SELECTOR, "button") == []
    # The dashboard no longer says "delete" about keys anywhere.
    keys_panel = dashboard.find("#keys-title").find_element(By.XPATH, "ancestor::section[1]").text
    assert "delete" not in keys_panel.lower(), keys_panel
    dashboard.screenshot_both("revoked-key")


def parse_year(iso):
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).year


# --- machines name their key ---------------------------------------------------------------------


def test_machines_show_their_key_by_description_and_hint(dashboard, server):
    [old] = create_app_with_keys(server, "fleet", ["old runner key"])
    # 100 newer keys push the old one off the first page of the key list.
    for n in range(100):
        assert server.admin("POST", "/v1/apps/fleet/keys", {"description": f"filler {n}"})[0] == 201
    status, plain = server.admin("POST", "/v1/apps/fleet/keys", {"reusable": True})
    assert status == 201
    server.login(old["key"], "old-runner")
    server.login(plain["key"], "plain-runner")
    dashboard.sign_in_to_app("fleet")
    assert old["id"] not in [row.get_attribute("data-key-id") for row in dashboard.key_rows()]

    machines = {m["name"]: m for m in server.admin("GET", "/v1/apps/fleet/machines")[1]["machines"]}
    key_cell = lambda name: dashboard.machine_row(machines[name]["id"]).find_element(By.CSS_SELECTOR, '[data-label="Key"]')
    assert key_cell("old-runner").text == f"old runner key\n{old['hint']}"
    assert key_cell("plain-runner").text == f"No description\n{plain['hint']}"
    dashboard.driver.execute_script("document.getElementById('machines-title').scrollIntoView();")
    dashboard.screenshot_both("machines-name-their-key")


# --- dates ---------------------------------------------------------------------------------------


def test_absolute_dates_carry_year_and_time_zone_and_relative_ones_stand_beside_them(dashboard, server):
    # Kolkata is UTC+5:30 with no daylight saving: each time shown must be converted to it.
    dashboard.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    assert server.admin("POST", "/v1/apps", {"id": "dates"})[0] == 201
    status, key = server.admin("POST", "/v1/apps/dates/keys", {"reusable": True, "ephemeral": True, "expires_in": 86400})
    assert status == 201
    server.login(key["key"], "dated")
    dashboard.sign_in_to_app("dates")

    times = dashboard.find_all("#app-view time")
    # Created (app, key), expires (key), logged in and time left (machine) at least.
    assert len(times) >= 5, [t.text for t in times]
    for time in times:
        text, iso = time.text, time.get_attribute("datetime")
        local = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(hours=5, minutes=30)
        assert str(local.year) in text, f"{text!r} has no year"
        assert "GMT+5:30" in text, f"{text!r} names no time zone"
        assert local.strftime("%I:%M").lstrip("0") in text or local.strftime("%H:%M") in text, (text, iso)
    # Relative words only ever stand beside the absolute time they describe.
    relative = dashboard.find_all("#app-view .relative")
    assert relative, "the machine's time left is shown"
    for words in relative:
        pair = words.find_element(By.XPATH, "..")
        assert pair.find_elements(By.CSS_SELECTOR, "time"), pair.text
    for cell in dashboard.find_all("#app-view td"):
        if re.search(r"\b(ago|left|just now)\b", cell.text):
            assert cell.find_elements(By.CSS_SELECTOR, "time"), f"a relative time stands alone: {cell.text!r}"
    machine_row = dashboard.find("#machines-body tr")
    time_left = machine_row.find_element(By.CSS_SELECTOR, '[data-label="Time left"]').text
    assert re.fullmatch(r".*20\d\d.*GMT\+5:30 \(((59|60) min left|1 h left)\)", time_left, re.S), time_left
    dashboard.screenshot_both("dates-with-year-and-zone")


# --- a phone-sized window ------------------------------------------------------------------------


def test_a_phone_sized_window_shows_the_app_first_in_short_cards(dashboard, server):
    create_app_with_keys(server, "other", [])
    create_app_with_keys(server, "narrow", ["phone-sized " * 6, "second"], name="A narrow window")
    dashboard.set_window(400, 800)
    dashboard.sign_in_to_app("narrow")

    # The selected app comes first: the sidebar is folded into a one-line switcher naming it.
    toggle = dashboard.find("#apps-toggle")
    assert toggle.is_displayed() and "A narrow window" in toggle.text
    assert toggle.get_attribute("aria-expanded") == "false"
    assert not dashboard.find("#app-list").is_displayed()
    assert not dashboard.find("#create-app-form").is_displayed()
    assert rect(dashboard, dashboard.find("#app-title"))["top"] < 200
    assert rect(dashboard, dashboard.find("#keys-table"))["top"] < 800, "the key list starts on the first screen"
    dashboard.screenshot("phone-app-first-400x800")

    # The switcher opens the sidebar; choosing an app folds it again.
    dashboard.click(toggle)
    assert toggle.get_attribute("aria-expanded") == "true"
    assert dashboard.find("#app-list").is_displayed() and dashboard.find("#create-app-form").is_displayed()
    dashboard.screenshot("phone-switcher-open-400x800")
    dashboard.click('#app-list .app-link[data-app-id="other"]')
    dashboard.wait_text("#app-id-label", "other")
    assert not dashboard.find("#app-list").is_displayed()
    dashboard.click(toggle)
    dashboard.click('#app-list .app-link[data-app-id="narrow"]')
    dashboard.wait_text("#app-id-label", "narrow")

    # The new key is shown whole: its field wraps and grows instead of cutting it off.
    secret = dashboard.generate_key("phone key", reusable=True, ephemeral=True)
    for field_id in ("new-key-value", "new-key-command"):
        fits = dashboard.driver.execute_script(
            "const f = document.getElementById(arguments[0]); const r = f.getBoundingClientRect();"
            "return {scroll: [f.scrollWidth, f.scrollHeight], client: [f.clientWidth, f.clientHeight],"
            " right: r.right, width: window.innerWidth};",
            field_id,
        )
        assert fits["scroll"][0] <= fits["client"][0] and fits["scroll"][1] <= fits["client"][1], (field_id, fits)
        assert fits["right"] <= fits["width"], (field_id, fits)
    assert dashboard.find("#new-key-value").get_attribute("value") == secret
    dashboard.screenshot("phone-new-key-400x800")
    dashboard.dismiss_key()

    server.login(secret, "small-runner")
    dashboard.refresh()
    # Each key is a card of at most three rows; so is each machine.
    for row in dashboard.key_rows() + dashboard.find_all("#machines-body tr"):
        assert card_rows(dashboard, row) <= 3, row.text
    assert dashboard.find("#keys-body td[data-label='Type']").is_displayed()
    assert not dashboard.find("#keys-table thead").is_displayed()
    overflow = dashboard.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a 400px window"
    dashboard.screenshot_both("phone-cards")

    # The generate dialog fits the window too.
    dashboard.set_window(400, 800)
    dashboard.open_generate_dialog()
    box = rect(dashboard, dashboard.find("#generate-dialog"))
    assert box["left"] >= 0 and box["right"] <= 400, box
    dashboard.screenshot("phone-generate-dialog-400x800", whole_page=False)


# --- app ids -------------------------------------------------------------------------------------


def test_an_invalid_app_id_gets_our_message_under_the_field(dashboard, server):
    dashboard.sign_in()
    field = dashboard.find("#app-id")
    submit = dashboard.find("#create-app-form button[type=submit]")

    for typed, expected in (
        ("", "Enter an app id, e.g. my-app."),
        ("My App", "An app id uses only lowercase letters, digits and dashes, and starts with a letter or digit: try my-app"),
        ("-web_", "An app id uses only lowercase letters, digits and dashes, and starts with a letter or digit: try web"),
        ("!!!", "An app id uses only lowercase letters, digits and dashes, and starts with a letter or digit."),
    ):
        field.clear()
        field.send_keys(typed)
        dashboard.click(submit)
        error = dashboard.find("#app-id-error")
        assert error.is_displayed() and error.text == expected, (typed, error.text)
        assert field.get_attribute("aria-invalid") == "true"
        assert "app-id-error" in field.get_attribute("aria-describedby")
        assert dashboard.driver.switch_to.active_element == field
        # Ours, under the field: not the browser's bubble (the form does not validate natively).
        assert dashboard.driver.execute_script("return document.getElementById('create-app-form').noValidate;")
        assert rect(dashboard, error)["top"] >= rect(dashboard, field)["bottom"]
    dashboard.screenshot_both("app-id-invalid")
    # With no app selected, a narrow window shows the sidebar open, with no switcher.
    dashboard.set_window(400, 800)
    assert not dashboard.find("#apps-toggle").is_displayed() and dashboard.find("#create-app-form").is_displayed()
    dashboard.set_window(1280, 900)
    assert server.admin("GET", "/v1/apps")[1]["apps"] == [], "nothing was sent"

    # Correcting the id clears the message as it is typed; then the app is created.
    field.clear()
    field.send_keys("my-app")
    assert not dashboard.find("#app-id-error").is_displayed()
    assert field.get_attribute("aria-invalid") is None
    dashboard.click(submit)
    dashboard.wait_text("#app-id-label", "my-app")
    assert [app["id"] for app in server.admin("GET", "/v1/apps")[1]["apps"]] == ["my-app"]
