"""Trust policies (issue 16, login with a workload identity) in the dashboard, in a real
Chromium against the real server and `authkeys dev-oidc-issuer`: each app's policies listed
(issuer, audience, subject, claims, what its machines get, tags), created from the GitHub
Actions preset, deleted with a confirmation that says it logs their machines out; machines
that logged in through a policy name it instead of a key; the panel shown only to tokens with
trust_policies:write. Every item is pictured at 1280×900 and 400×800 and checked over the API
as well; policy fields (a creator's input) show as text."""

import json
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

XSS = "<img src=x onerror=window.__alerted=1>"
GITHUB = "https://token.actions.githubusercontent.com"
# The dev issuer is plain http on loopback: the server must be told to trust such issuers.
INSECURE = pytest.mark.server_args("--oidc-allow-insecure-issuer")


def id_token(issuer, audience="authkeys"):
    """An ID token from the issuer's GitHub-Actions-like token endpoint."""
    request = urllib.request.Request(f"{issuer['ACTIONS_ID_TOKEN_REQUEST_URL']}?audience={audience}")
    request.add_header("Authorization", f"Bearer {issuer['ACTIONS_ID_TOKEN_REQUEST_TOKEN']}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["value"]


def new_app(server, app_id):
    assert server.admin("POST", "/v1/apps", {"id": app_id})[0] == 201


def new_policy(server, app_id, **fields):
    status, created = server.admin("POST", f"/v1/apps/{app_id}/trust-policies", fields)
    assert status == 201, created
    return created


def policies_of(server, app_id):
    status, reply = server.admin("GET", f"/v1/apps/{app_id}/trust-policies")
    assert status == 200, reply
    return reply["trust_policies"]


def machines_of(server, app_id):
    status, reply = server.admin("GET", f"/v1/apps/{app_id}/machines")
    assert status == 200, reply
    return reply["machines"]


def policy_row(dashboard, policy_id):
    return dashboard.find(f'#policies-body tr[data-policy-id="{policy_id}"]')


def assert_markup_is_text(dashboard, server):
    assert dashboard.find_all("#app-view img, #policy-dialog img, #confirm-dialog img") == []
    assert dashboard.driver.execute_script("return window.__alerted === undefined;")
    dashboard.assert_no_dialog_or_alert()
    assert "GET /x " not in server.log()


@INSECURE
def test_policies_are_listed_and_their_machines_name_them(dashboard, server, oidc_issuer):
    new_app(server, "ci")
    policy = new_policy(
        server,
        "ci",
        issuer=oidc_issuer["issuer"],
        audience="authkeys",
        subject="repo:acme/api:ref:refs/heads/*",
        claims={"repository_owner": "acme", "workflow": XSS},
        description=XSS,
        ephemeral=True,
        session_ttl=3600,
        idle_timeout=900,
        tags=["tag:ci"],
        metadata={"team": XSS},
    )
    # The claim `workflow` must be exactly XSS: the dev issuer's tokens say "ci", so a second
    # policy without it is the one they log in through.
    through = new_policy(
        server, "ci", issuer=oidc_issuer["issuer"], audience="authkeys", subject="repo:acme/api:*", tags=["tag:deploy"]
    )
    status, key = server.admin("POST", "/v1/apps/ci/keys", {"description": "laptops"})
    assert status == 201
    server.login(key["key"], machine="laptop")
    status, logged_in = server.request(
        "POST", "/v1/auth/login", {"id_token": id_token(oidc_issuer), "app": "ci", "machine": "runner-1"}
    )
    assert status == 201, logged_in
    assert logged_in["machine"]["trust_policy_id"] == through["id"]

    dashboard.sign_in_to_app("ci")
    dashboard.wait_visible("#policies-panel")
    row = policy_row(dashboard, policy["id"])
    for shown in (oidc_issuer["issuer"], "authkeys", "repo:acme/api:ref:refs/heads/*", "repository_owner", "acme",
                  "workflow", XSS, "Ephemeral", "Session 1 hour", "Idle 15 minutes", "tag:ci", policy["id"]):
        assert shown in row.text, shown
    assert "No description" in policy_row(dashboard, through["id"]).text
    # Newest first, as the API lists them.
    assert [r.get_attribute("data-policy-id") for r in dashboard.find_all("#policies-body tr")] == [through["id"], policy["id"]]

    # The machine of the policy names it; the key's machine still names its key.
    runner = dashboard.machine_row(logged_in["machine"]["id"]).find_element(By.CSS_SELECTOR, '[data-label="Key"]')
    assert "Trust policy" in runner.text and through["id"] in runner.text
    [laptop] = [m for m in machines_of(server, "ci") if m["name"] == "laptop"]
    laptop_key = dashboard.machine_row(laptop["id"]).find_element(By.CSS_SELECTOR, '[data-label="Key"]')
    assert "laptops" in laptop_key.text and "Trust policy" not in laptop_key.text
    dashboard.find(f'#policies-body tr[data-policy-id="{policy["id"]}"] details summary').click()
    assert_markup_is_text(dashboard, server)
    dashboard.screenshot_both("trust-policies-list")


@INSECURE
def test_deleting_a_policy_says_it_logs_out_its_machines_and_does(dashboard, server, oidc_issuer):
    new_app(server, "ci")
    policy = new_policy(server, "ci", issuer=oidc_issuer["issuer"], audience="authkeys", subject="*", description=XSS)
    status, logged_in = server.request(
        "POST", "/v1/auth/login", {"id_token": id_token(oidc_issuer), "app": "ci", "machine": "runner-1"}
    )
    assert status == 201, logged_in
    session = logged_in["session_token"]

    dashboard.sign_in_to_app("ci")
    button = policy_row(dashboard, policy["id"]).find_element(By.CSS_SELECTOR, "button[aria-label^='Delete']")
    text = dashboard.open_confirmation(button)
    assert "logs out every machine that logged in through it" in text and XSS in text
    assert dashboard.driver.switch_to.active_element == dashboard.find("#confirm-cancel"), "starts on Cancel"
    dashboard.screenshot_both("trust-policies-delete-confirm", whole_page=False)
    dashboard.cancel()
    assert len(policies_of(server, "ci")) == 1 and server.whoami_status(session) == 200

    dashboard.open_confirmation(button)
    dashboard.confirm()
    assert "Deleted trust policy" in dashboard.status()
    assert policies_of(server, "ci") == []
    assert machines_of(server, "ci") == []
    assert server.whoami_status(session) == 401
    assert dashboard.find("#policies-empty").is_displayed()
    assert dashboard.find_all("#machines-body tr") == []
    assert_markup_is_text(dashboard, server)


def test_the_github_actions_preset_fills_the_form_and_a_policy_is_created(dashboard, server):
    new_app(server, "ci")
    dashboard.sign_in_to_app("ci")
    assert dashboard.find("#policies-empty").is_displayed()
    dashboard.click("#policy-open")
    dashboard.wait_visible("#policy-dialog")
    # Nothing is sent while the required fields are empty.
    dashboard.click("#policy-form button[type=submit]")
    assert "issuer" in dashboard.find("#policy-issuer-error").text
    assert dashboard.find("#policy-subject-error").is_displayed()

    dashboard.click("#policy-preset-github")
    assert dashboard.find("#policy-issuer").get_attribute("value") == GITHUB
    assert dashboard.find("#policy-audience").get_attribute("value") == "authkeys"
    subject = dashboard.find("#policy-subject")
    assert subject.get_attribute("value") == "repo:OWNER/REPO:ref:refs/heads/main"
    selected = dashboard.driver.execute_script(
        "const s = document.activeElement; return s.id + ':' + s.value.slice(s.selectionStart, s.selectionEnd);"
    )
    assert selected == "policy-subject:OWNER/REPO", "OWNER/REPO is selected, ready to be typed over"
    dashboard.screenshot_both("trust-policies-github-preset", whole_page=False)
    # Left as it is, the placeholder is explained, and nothing is sent.
    dashboard.click("#policy-form button[type=submit]")
    assert "Replace OWNER/REPO" in dashboard.find("#policy-subject-error").text
    assert policies_of(server, "ci") == []

    subject.clear()
    subject.send_keys("repo:octo/tools:ref:refs/heads/main")
    dashboard.click("#policy-claims-add")
    row = dashboard.find_all("#policy-claims-rows .metadata-row")[-1]
    row.find_element(By.CSS_SELECTOR, ".metadata-name").send_keys("repository_owner")
    row.find_element(By.CSS_SELECTOR, ".metadata-value").send_keys("octo")
    dashboard.find("#policy-description").send_keys(XSS)
    dashboard.find("#policy-ephemeral").click()
    Select(dashboard.find("#policy-session-ttl")).select_by_visible_text("1 hour")
    Select(dashboard.find("#policy-idle-timeout")).select_by_visible_text("After 15 minutes idle")
    dashboard.find("#policy-tags").send_keys("ci, tag:deploy")
    dashboard.click("#policy-form button[type=submit]")
    dashboard.wait_hidden("#policy-dialog")
    assert "Created trust policy" in dashboard.status()

    [created] = policies_of(server, "ci")
    assert created["issuer"] == GITHUB and created["audience"] == "authkeys"
    assert created["subject"] == "repo:octo/tools:ref:refs/heads/main"
    assert created["claims"] == {"repository_owner": "octo"}
    assert created["description"] == XSS
    assert (created["ephemeral"], created["session_ttl"], created["idle_timeout"]) == (True, 3600, 900)
    assert created["tags"] == ["tag:ci", "tag:deploy"]
    row = policy_row(dashboard, created["id"])
    assert GITHUB in row.text and XSS in row.text
    assert_markup_is_text(dashboard, server)
    dashboard.screenshot_both("trust-policies-created")


def test_an_http_issuer_is_refused_inside_the_dialog_without_the_insecure_flag(dashboard, server):
    new_app(server, "ci")
    dashboard.sign_in_to_app("ci")
    dashboard.click("#policy-open")
    dashboard.wait_visible("#policy-dialog")
    dashboard.find("#policy-issuer").send_keys("http://127.0.0.1:9")
    dashboard.find("#policy-audience").send_keys("authkeys")
    dashboard.find("#policy-subject").send_keys("*")
    dashboard.click("#policy-form button[type=submit]")
    error = dashboard.wait_visible("#policy-error")
    assert "issuer" in error.text and "HTTP 422" in error.text
    assert dashboard.find("#policy-dialog").is_displayed(), "the dialog keeps what was typed"
    assert dashboard.find("#policy-issuer").get_attribute("value") == "http://127.0.0.1:9"
    assert policies_of(server, "ci") == []


def test_only_tokens_with_trust_policies_write_see_the_policies(dashboard, server):
    new_app(server, "ci")
    policy = new_policy(server, "ci", issuer=GITHUB, audience="authkeys", subject="repo:acme/api:*")
    status, without = server.admin(
        "POST", "/v1/admin-tokens", {"name": "reader", "scopes": ["apps:read", "keys:read", "machines:read"]}
    )
    assert status == 201, without
    status, with_scope = server.admin(
        "POST", "/v1/admin-tokens", {"name": "ci-setup", "scopes": ["trust_policies:write"], "apps": ["ci"]}
    )
    assert status == 201, with_scope

    dashboard.sign_in(without["token"])
    dashboard.click('#app-list .app-link[data-app-id="ci"]')
    dashboard.wait_text("#app-id-label", "ci")
    assert not dashboard.find("#policies-panel").is_displayed()
    assert "GET /v1/apps/ci/trust-policies" not in server.log(), "not even asked for"
    assert dashboard.alert_text() == ""
    dashboard.screenshot_both("trust-policies-hidden")

    dashboard.find("#sign-out").click()
    dashboard.sign_in(with_scope["token"])
    dashboard.click('#app-list .app-link[data-app-id="ci"]')
    dashboard.wait_text("#app-id-label", "ci")
    assert dashboard.find("#policies-panel").is_displayed()
    assert dashboard.find("#policy-open").is_displayed()
    assert policy_row(dashboard, policy["id"]).is_displayed()
    assert "GET /v1/apps/ci/trust-policies" in server.log()
    assert dashboard.alert_text() == ""
