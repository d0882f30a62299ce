"""Keys that carry policy (issue 12) in the dashboard, in a real Chromium against the real
server: tags as chips, metadata, use limits, session and idle lifetimes in the generate dialog
(each only where it applies), Rotate, filtering by tag, and the server's real ephemeral TTL.
Every item is pictured at 1280×900 and 400×800, and checked over the API as well."""

import re
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from dashboard import key_by_hint, keys_of, parse_time

XSS = "<img src=x onerror=window.__alerted=1>"


def new_app(server, app_id):
    assert server.admin("POST", "/v1/apps", {"id": app_id})[0] == 201


def api_key(server, app_id, **fields):
    status, key = server.admin("POST", f"/v1/apps/{app_id}/keys", fields)
    assert status == 201, key
    return key


def add_tag(dashboard, typed):
    field = dashboard.find("#key-tag-input")
    field.send_keys(typed + Keys.ENTER)


def chips(dashboard, css):
    return [chip.text for chip in dashboard.find_all(f"{css} .chip span, {css} .chip-button")]


def add_metadata(dashboard, name, value):
    dashboard.find("#key-metadata-add").click()
    row = dashboard.find_all("#key-metadata-rows .metadata-row")[-1]
    row.find_element(By.CSS_SELECTOR, ".metadata-name").send_keys(name)
    row.find_element(By.CSS_SELECTOR, ".metadata-value").send_keys(value)


def set_alert_trap(dashboard):
    dashboard.driver.execute_script("window.alert = () => { window.__alerted = 1; };")


def assert_no_markup_ran(dashboard, server):
    assert dashboard.find_all("#app-view img, #generate-dialog img, #app-view b") == []
    assert dashboard.driver.execute_script("return window.__alerted === undefined;")
    dashboard.assert_no_dialog_or_alert()
    assert "GET /x " not in server.log()


# --- tags ----------------------------------------------------------------------------------------


def test_tags_are_chips_in_the_form_and_on_keys_and_machines(dashboard, server):
    new_app(server, "tags")
    dashboard.sign_in_to_app("tags")
    dashboard.open_generate_dialog()
    dashboard.find("#key-description").send_keys("tagged runners")
    dashboard.find("#key-reusable").click()

    # Typed with or without "tag:", added with Enter or the button; each becomes a chip.
    add_tag(dashboard, "ci")
    dashboard.find("#key-tag-input").send_keys("tag:deploy")
    dashboard.find("#key-tag-add").click()
    add_tag(dashboard, "scratch")
    assert chips(dashboard, "#key-tags") == ["tag:ci", "tag:deploy", "tag:scratch"]
    assert dashboard.find("#key-tag-input").get_attribute("value") == ""
    assert dashboard.find("#generate-dialog").is_displayed(), "Enter adds a tag, it does not submit"
    # Bad and repeated tags are explained under the field and not added.
    add_tag(dashboard, "Not A Tag")
    error = dashboard.find("#key-tags-error")
    assert error.is_displayed() and "tag:Not A Tag is not a tag" in error.text, error.text
    dashboard.find("#key-tag-input").clear()
    add_tag(dashboard, "ci")
    assert "tag:ci is already there" in dashboard.find("#key-tags-error").text
    dashboard.find("#key-tag-input").clear()
    # A chip's × removes it.
    dashboard.find('#key-tags button[aria-label="Remove tag:scratch"]').click()
    assert chips(dashboard, "#key-tags") == ["tag:ci", "tag:deploy"]
    dashboard.screenshot_both("tags-in-the-form", whole_page=False)

    dashboard.click("#generate-form button[type=submit]")
    dashboard.wait_visible("#new-key-panel")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    key = key_by_hint(server, "tags", secret)
    assert sorted(key["tags"]) == ["tag:ci", "tag:deploy"]
    dashboard.dismiss_key()

    server.login(secret, "tagged-runner")
    dashboard.refresh()
    assert sorted(chips(dashboard, f'#keys-body tr[data-key-id="{key["id"]}"]')) == ["tag:ci", "tag:deploy"]
    assert sorted(chips(dashboard, "#machines-body tr")) == ["tag:ci", "tag:deploy"]
    dashboard.screenshot_both("tags-on-keys-and-machines")


def test_a_key_has_at_most_sixteen_tags(dashboard, server):
    new_app(server, "many")
    dashboard.sign_in_to_app("many")
    dashboard.open_generate_dialog()
    for n in range(16):
        add_tag(dashboard, f"t{n}")
    assert len(chips(dashboard, "#key-tags")) == 16
    add_tag(dashboard, "one-too-many")
    assert "at most 16 tags" in dashboard.find("#key-tags-error").text
    assert len(chips(dashboard, "#key-tags")) == 16
    dashboard.screenshot_both("sixteen-tags", whole_page=False)
    dashboard.find("#key-tag-input").clear()
    dashboard.click("#generate-form button[type=submit]")
    dashboard.wait_visible("#new-key-panel")
    [key] = keys_of(server, "many")
    assert len(key["tags"]) == 16


# --- metadata ------------------------------------------------------------------------------------


def test_metadata_is_entered_as_rows_and_always_shown_as_text(dashboard, server):
    new_app(server, "meta")
    dashboard.sign_in_to_app("meta")
    set_alert_trap(dashboard)
    dashboard.open_generate_dialog()
    dashboard.find("#key-reusable").click()

    # What must be fixed is said under the field, and nothing is sent.
    add_metadata(dashboard, "", "orphan value")
    dashboard.click("#generate-form button[type=submit]")
    assert "Give the value “orphan value” a name" in dashboard.find("#key-metadata-error").text
    dashboard.find("#key-metadata-rows .metadata-row button").click()
    add_metadata(dashboard, "team", "a")
    add_metadata(dashboard, "team", "b")
    dashboard.click("#generate-form button[type=submit]")
    assert "The name “team” is used twice" in dashboard.find("#key-metadata-error").text
    dashboard.find_all("#key-metadata-rows .metadata-row button")[-1].click()
    add_metadata(dashboard, "big", "x" * 1000)
    add_metadata(dashboard, "bigger", "y" * 100)
    dashboard.click("#generate-form button[type=submit]")
    assert re.search(r"Metadata is 11\d\d bytes as JSON; a key's is at most 1024", dashboard.find("#key-metadata-error").text)
    assert keys_of(server, "meta") == []
    for button in dashboard.find_all("#key-metadata-rows .metadata-row button")[-2:]:
        button.click()

    # Markup in names and values is kept as text, never run.
    add_metadata(dashboard, "note", XSS)
    add_metadata(dashboard, "<b>name</b>", "plain")
    dashboard.screenshot_both("metadata-in-the-form", whole_page=False)
    dashboard.click("#generate-form button[type=submit]")
    dashboard.wait_visible("#new-key-panel")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    key = key_by_hint(server, "meta", secret)
    assert key["metadata"] == {"team": "a", "note": XSS, "<b>name</b>": "plain"}
    dashboard.dismiss_key()

    # A key made over the API may carry any JSON value: shown as JSON text.
    other = api_key(server, "meta", description="api", reusable=True, metadata={"n": 3, "nested": {"html": XSS}})
    server.login(secret, "meta-runner")
    dashboard.refresh()

    row = dashboard.key_row(key["id"])
    details = row.find_element(By.CSS_SELECTOR, "details.metadata-view")
    assert details.find_element(By.CSS_SELECTOR, "summary").text == "Metadata (3)"
    details.find_element(By.CSS_SELECTOR, "summary").click()
    pairs = lambda d: dict(
        zip(
            [dt.text for dt in d.find_elements(By.CSS_SELECTOR, "dt")],
            [dd.text for dd in d.find_elements(By.CSS_SELECTOR, "dd")],
        )
    )
    assert pairs(details) == {"team": "a", "note": XSS, "<b>name</b>": "plain"}
    api_details = dashboard.key_row(other["id"]).find_element(By.CSS_SELECTOR, "details.metadata-view")
    api_details.find_element(By.CSS_SELECTOR, "summary").click()
    assert pairs(api_details) == {"n": "3", "nested": '{"html":"' + XSS + '"}'}
    # The machine carries its key's metadata, shown the same way.
    machine_details = dashboard.find("#machines-body details.metadata-view")
    machine_details.find_element(By.CSS_SELECTOR, "summary").click()
    assert pairs(machine_details) == {"team": "a", "note": XSS, "<b>name</b>": "plain"}
    dashboard.screenshot_both("metadata-as-text")
    assert_no_markup_ran(dashboard, server)


# --- limits and lifetimes ------------------------------------------------------------------------


def test_use_limit_and_lifetimes_are_asked_only_where_they_apply(dashboard, server):
    new_app(server, "limits")
    dashboard.sign_in_to_app("limits")
    dashboard.open_generate_dialog()
    max_uses, session_ttl = "#key-max-uses-field", "#key-session-ttl-field"
    assert not dashboard.find(max_uses).is_displayed() and not dashboard.find(session_ttl).is_displayed()
    assert dashboard.find("#key-idle-timeout").is_displayed(), "an idle timeout applies to every key"
    dashboard.find("#key-reusable").click()
    assert dashboard.find(max_uses).is_displayed() and not dashboard.find(session_ttl).is_displayed()
    dashboard.find("#key-ephemeral").click()
    assert dashboard.find(session_ttl).is_displayed()
    dashboard.screenshot_both("limits-in-the-form", whole_page=False)

    # A limit that is not a whole number ≥ 1 is explained under its field.
    dashboard.find("#key-max-uses").send_keys("0")
    dashboard.click("#generate-form button[type=submit]")
    assert "whole number of logins, 1 or more" in dashboard.find("#key-max-uses-error").text
    assert keys_of(server, "limits") == []
    dashboard.find("#key-max-uses").clear()
    dashboard.find("#key-max-uses").send_keys("3")
    Select(dashboard.find("#key-session-ttl")).select_by_visible_text("8 hours")
    Select(dashboard.find("#key-idle-timeout")).select_by_visible_text("After 15 minutes idle")
    dashboard.find("#key-description").send_keys("limited")
    dashboard.click("#generate-form button[type=submit]")
    dashboard.wait_visible("#new-key-panel")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    key = key_by_hint(server, "limits", secret)
    assert (key["max_uses"], key["uses_remaining"], key["session_ttl"], key["idle_timeout"]) == (3, 3, 28800, 900)
    dashboard.dismiss_key()

    # Fields hidden again are not sent: a single-use, non-ephemeral key is still accepted.
    def unchecked_after_filling(page):
        page.find("#key-max-uses").send_keys("5")
        Select(page.find("#key-session-ttl")).select_by_visible_text("1 day")
        page.find("#key-reusable").click()
        page.find("#key-ephemeral").click()

    plain_secret = dashboard.generate_key("plain", reusable=True, ephemeral=True, fill=unchecked_after_filling)
    plain = key_by_hint(server, "limits", plain_secret)
    assert (plain["reusable"], plain["ephemeral"], plain["max_uses"], plain["session_ttl"]) == (False, False, 1, None)
    dashboard.dismiss_key()

    server.login(secret, "first")
    session = server.login(secret, "second")
    dashboard.refresh()
    row = dashboard.key_row(key["id"])
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Uses"]').text == "2 of 3\n1 left"
    badges = [badge.text for badge in row.find_elements(By.CSS_SELECTOR, ".badge")]
    assert "Session 8 hours" in badges and "Idle 15 minutes" in badges, badges
    # Each machine shows when it will be logged out for idleness, beside the time left.
    machine = next(m for m in server.admin("GET", "/v1/apps/limits/machines")[1]["machines"] if m["name"] == "second")
    idle = dashboard.machine_row(machine["id"]).find_element(By.CSS_SELECTOR, '[data-label="Idle logout"]')
    assert idle.find_element(By.CSS_SELECTOR, "time").get_attribute("datetime") == machine["idle_expires_at"]
    assert re.fullmatch(r".*20\d\d.* \((1[45]|15) min left\)", idle.text, re.S), idle.text
    left = dashboard.machine_row(machine["id"]).find_element(By.CSS_SELECTOR, '[data-label="Time left"]').text
    assert re.search(r"\((7 h \d+ min|8 h) left\)", left), left
    assert server.whoami_status(session) == 200
    dashboard.screenshot_both("limits-on-keys-and-machines")

    # The last use takes it to "3 of 3", used up.
    server.login(secret, "third")
    dashboard.refresh()
    row = dashboard.key_row(key["id"])
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Uses"]').text == "3 of 3\n0 left"
    assert "Used" in [badge.text for badge in row.find_elements(By.CSS_SELECTOR, ".badge")]


@pytest.mark.server_args("--ephemeral-ttl", "7200")
def test_the_ephemeral_hint_states_the_servers_real_ttl(dashboard, server):
    assert server.admin("GET", "/v1/server")[1]["ephemeral_ttl"] == 7200
    new_app(server, "ttl")
    dashboard.sign_in_to_app("ttl")
    dashboard.open_generate_dialog()
    hint = dashboard.find("#key-ephemeral-help").text
    assert "logged out automatically 2 hours after their login" in hint, hint
    assert "one hour" not in hint
    dashboard.find("#key-ephemeral").click()
    default = Select(dashboard.find("#key-session-ttl")).first_selected_option.text
    assert default == "Server default (2 hours)"
    dashboard.screenshot_both("ephemeral-ttl-hint", whole_page=False)
    # What it says is what happens: the machine gets two hours.
    dashboard.click("#generate-form button[type=submit]")
    dashboard.wait_visible("#new-key-panel")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    server.login(secret)
    [machine] = server.admin("GET", "/v1/apps/ttl/machines")[1]["machines"]
    assert abs(parse_time(machine["expires_at"]) - parse_time(machine["created_at"]) - 7200) < 5


# --- rotation ------------------------------------------------------------------------------------


def test_rotate_shows_the_new_key_once_and_when_the_old_one_stops(dashboard, server):
    new_app(server, "rot")
    old = api_key(
        server, "rot", description="deployer", reusable=True, tags=["tag:ci"], metadata={"team": "infra"}, expires_in=86400
    )
    session = server.login(old["key"], "still-here")
    dashboard.sign_in_to_app("rot")

    rotate = dashboard.key_row(old["id"]).find_element(By.CSS_SELECTOR, 'button[aria-label^="Rotate"]')
    text = dashboard.open_confirmation(rotate)
    assert "Rotate this auth key?" in text and "deployer" in text
    assert "Machines already logged in with the old key stay logged in" in text
    grace = Select(dashboard.find("#confirm-choice-select"))
    assert grace.first_selected_option.text == "1 hour", "the API's default grace is preselected"
    grace.select_by_visible_text("1 day")
    dashboard.screenshot_both("rotate-confirmation", whole_page=False)
    before = time.time()
    dashboard.confirm()

    # The new key, once, and when the old one stops working.
    dashboard.wait_visible("#new-key-panel")
    secret = dashboard.find("#new-key-value").get_attribute("value")
    new = key_by_hint(server, "rot", secret)
    old_now = server.admin("GET", f"/v1/apps/rot/keys/{old['id']}")[1]
    assert (new["rotated_from"], old_now["rotated_to"]) == (old["id"], new["id"])
    assert (new["description"], new["tags"], new["metadata"], new["reusable"]) == ("deployer", ["tag:ci"], {"team": "infra"}, True)
    assert abs(parse_time(old_now["expires_at"]) - (before + 86400)) < 30
    note = dashboard.find("#new-key-rotated")
    assert note.is_displayed()
    assert "This key replaces “deployer”" in note.text and "The old key keeps working until" in note.text, note.text
    assert note.find_element(By.CSS_SELECTOR, "time").get_attribute("datetime") == old_now["expires_at"]
    assert re.search(r"\(in (24 h|1 day)\)", note.text), note.text
    assert "Machines already logged in with it stay logged in" in note.text
    assert dashboard.driver.switch_to.active_element == dashboard.find("#new-key-title")
    assert "Rotated the key “deployer”" in dashboard.status()
    dashboard.screenshot_both("rotated-new-key")

    # The old row says it was rotated and offers no second rotation; the new one can be.
    old_row = dashboard.key_row(old["id"])
    assert "Rotated" in [badge.text for badge in old_row.find_elements(By.CSS_SELECTOR, ".badge")]
    assert old_row.find_elements(By.CSS_SELECTOR, 'button[aria-label^="Rotate"]') == []
    assert dashboard.key_row(new["id"]).find_elements(By.CSS_SELECTOR, 'button[aria-label^="Rotate"]')
    assert server.whoami_status(session) == 200
    assert server.request("POST", "/v1/keys/verify", {"key": secret})[1]["valid"] is True
    dashboard.dismiss_key()
    assert secret not in dashboard.driver.page_source
    assert dashboard.find("#new-key-rotated").text == ""

    # With no grace the old key stops at once, and the panel says it has stopped.
    dashboard.open_confirmation(dashboard.key_row(new["id"]).find_element(By.CSS_SELECTOR, 'button[aria-label^="Rotate"]'))
    Select(dashboard.find("#confirm-choice-select")).select_by_visible_text("Stop it now")
    dashboard.confirm()
    dashboard.wait_visible("#new-key-panel")
    assert "The old key stopped working at" in dashboard.find("#new-key-rotated").text
    assert server.request("POST", "/v1/keys/verify", {"key": secret})[1]["valid"] is False
    dashboard.dismiss_key()


def test_rotating_a_key_rotated_elsewhere_explains_it(dashboard, server):
    new_app(server, "race")
    key = api_key(server, "race", description="twice")
    dashboard.sign_in_to_app("race")
    assert server.admin("POST", f"/v1/apps/race/keys/{key['id']}/rotate", {"grace_seconds": 60})[0] == 201
    dashboard.open_confirmation(dashboard.key_row(key["id"]).find_element(By.CSS_SELECTOR, 'button[aria-label^="Rotate"]'))
    dashboard.confirm()
    message = dashboard.wait_text("#alert", "can no longer be rotated")
    assert "key_inactive" in message and "409" in message
    assert not dashboard.find("#new-key-panel").is_displayed()
    # The list is reloaded to show the truth: the key is marked rotated.
    assert "Rotated" in [b.text for b in dashboard.key_row(key["id"]).find_elements(By.CSS_SELECTOR, ".badge")]
    dashboard.screenshot_both("rotate-refused")


# --- filtering by tag ----------------------------------------------------------------------------


def test_lists_filter_by_tag(dashboard, server):
    new_app(server, "filter")
    keys = {
        name: api_key(server, "filter", description=name, reusable=True, tags=tags)
        for name, tags in (("ci only", ["tag:ci"]), ("ci and prod", ["tag:ci", "tag:prod"]), ("prod only", ["tag:prod"]), ("untagged", []))
    }
    for name, key in keys.items():
        server.login(key["key"], f"{name.replace(' ', '-')}-machine")
    dashboard.sign_in_to_app("filter")
    assert len(dashboard.key_rows()) == 4

    shown_keys = lambda: sorted(row.find_element(By.CSS_SELECTOR, ".key-description").text for row in dashboard.key_rows())
    shown_machines = lambda: sorted(
        row.find_element(By.CSS_SELECTOR, '[data-label="Name"] .cell-text').text for row in dashboard.find_all("#machines-body tr")
    )

    # Typed into the filter (with or without "tag:"): keys and machines both narrow.
    dashboard.find("#tag-filter-input").send_keys("ci" + Keys.ENTER)
    dashboard.wait_idle()
    assert chips(dashboard, "#tag-filters") == ["tag:ci"]
    assert shown_keys() == ["ci and prod", "ci only"]
    assert shown_machines() == ["ci-and-prod-machine", "ci-only-machine"]
    dashboard.screenshot_both("filtered-by-tag")

    # A tag chip on a row adds its tag: every tag must match.
    prod_chip = next(
        chip for chip in dashboard.find_all("#keys-body .chip-button") if chip.text == "tag:prod"
    )
    dashboard.click(prod_chip)
    assert chips(dashboard, "#tag-filters") == ["tag:ci", "tag:prod"]
    assert shown_keys() == ["ci and prod"]
    assert shown_machines() == ["ci-and-prod-machine"]
    assert "Showing keys and machines with tag:ci and tag:prod" in dashboard.status()

    # Removing a chip widens the lists again.
    dashboard.click('#tag-filters button[aria-label="Remove tag:ci from the filter"]')
    assert shown_keys() == ["ci and prod", "prod only"]
    assert shown_machines() == ["ci-and-prod-machine", "prod-only-machine"]

    # A tag nothing carries gives an empty list that says so; a malformed one is explained.
    dashboard.find("#tag-filter-input").send_keys("nobody" + Keys.ENTER)
    dashboard.wait_idle()
    assert dashboard.find("#keys-empty").text == "No keys carry tag:prod and tag:nobody."
    dashboard.find("#tag-filter-input").send_keys("Not a tag" + Keys.ENTER)
    dashboard.wait_idle()
    assert "tag:Not a tag is not a tag" in dashboard.find("#tag-filter-error").text
    assert chips(dashboard, "#tag-filters") == ["tag:prod", "tag:nobody"]
    dashboard.screenshot_both("filter-empty-and-refused")

    # Deleting the app still counts every key and machine, not just the ones filtered on.
    text = dashboard.open_confirmation(dashboard.find("#delete-app"))
    assert "revokes its 4 active auth keys and logs out its 4 machines" in text, text
    dashboard.cancel()
