"""The dashboard as a person uses it: each method is one thing they do or look at. Every wait
is bounded (WAIT_SECS) and waits for what the page shows, never for a fixed time."""

import base64

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_SECS = 10


def keys_of(server, app_id):
    status, reply = server.admin("GET", f"/v1/apps/{app_id}/keys?include_revoked=true")
    assert status == 200, reply
    return reply["keys"]


def key_by_hint(server, app_id, secret):
    """The key (as the API lists it) whose hint matches the full secret `secret`."""
    hint = f"{secret[:8]}…{secret[-4:]}"
    [key] = [key for key in keys_of(server, app_id) if key["hint"] == hint]
    return key


def parse_time(text):
    """An RFC 3339 time from the API as seconds since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Dashboard:
    def __init__(self, driver, server, screenshots, test_name):
        self.driver = driver
        self.server = server
        self.screenshots = screenshots
        self.test_name = test_name

    # --- looking -------------------------------------------------------------------------------

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition, message):
        return WebDriverWait(self.driver, WAIT_SECS).until(condition, message)

    def wait_idle(self):
        """Waits until every action the page started has settled (it marks itself aria-busy)."""
        self.wait(
            lambda d: d.execute_script("return !document.querySelector('[aria-busy=true]');"),
            "the page stayed busy",
        )

    def click(self, target):
        """Clicks an element (or the element a CSS selector names) and waits for the page to settle."""
        element = self.find(target) if isinstance(target, str) else target
        element.click()
        self.wait_idle()

    def wait_visible(self, css):
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} never became visible")

    def wait_hidden(self, css):
        return self.wait(EC.invisibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} never went away")

    def wait_text(self, css, text):
        """Waits until the element shows `text` (a substring) and returns its whole text."""
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), f"{css} never showed {text!r}")
        return self.find(css).text

    def status(self):
        return self.find("#status").text

    def alert_text(self):
        return self.find("#alert").text

    def storage(self):
        """Everything the page keeps in the browser: session and local storage, cookies."""
        return self.driver.execute_script(
            "return {session: {...sessionStorage}, local: {...localStorage}, cookies: document.cookie};"
        )

    def key_rows(self):
        return self.find_all("#keys-body tr")

    def key_row(self, key_id):
        return self.find(f'#keys-body tr[data-key-id="{key_id}"]')

    def revoke_button(self, key_id):
        return self.find(f'#keys-body tr[data-key-id="{key_id}"] button[aria-label^="Revoke"]')

    def machine_row(self, machine_id):
        return self.find(f'#machines-body tr[data-machine-id="{machine_id}"]')

    def assert_no_dialog_or_alert(self):
        try:
            text = self.driver.switch_to.alert.text
        except NoAlertPresentException:
            return
        raise AssertionError(f"a JavaScript alert fired: {text!r}")

    def screenshot_both(self, name, whole_page=True):
        """Saves `name`-1280x900.png and `name`-400x800.png: the page as it is, in a desktop
        window and a phone-sized one, then restores the desktop size."""
        paths = []
        for width, height in ((1280, 900), (400, 800)):
            self.set_window(width, height)
            paths.append(self.screenshot(f"{name}-{width}x{height}", whole_page))
        self.set_window(1280, 900)
        return paths

    def set_window(self, width, height):
        """Resizes the window so that its viewport is exactly width × height CSS pixels."""
        self.driver.set_window_size(width, height)
        inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight];")
        self.driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
        self.wait(
            lambda d: d.execute_script("return [window.innerWidth, window.innerHeight];") == [width, height],
            f"the viewport never became {width}x{height}",
        )

    def screenshot(self, name, whole_page=True):
        """Saves the whole page (or just the window, for a modal dialog: the window is what it
        covers) as target/screenshots/<name>.png."""
        path = self.screenshots / f"{name}.png"
        if not whole_page:
            self.driver.save_screenshot(str(path))
            return path
        scrolled = self.driver.execute_script("return [window.scrollX, window.scrollY];")
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        # Captured beyond the viewport, the page is laid out without a scrollbar: the whole
        # window's width, not the content's (which excludes the scrollbar).
        width = max(size["width"], self.driver.execute_script("return window.innerWidth;"))
        clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        # Capturing beyond the viewport scrolls the page: put it back where the test left it.
        self.driver.execute_script("window.scrollTo(arguments[0], arguments[1]);", *scrolled)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def assert_no_console_errors(self):
        """No script error and no Content-Security-Policy violation happened. Failed API calls
        (expected 4xx answers) are logged by the browser too, and are allowed."""
        problems = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE" and "the server responded with a status of 4" not in entry["message"]
        ]
        assert not problems, "browser console errors:\n" + "\n".join(problems)

    # --- doing ---------------------------------------------------------------------------------

    def press(self, *keys):
        """Types keys into whatever has the focus, as a keyboard would."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def tab_to(self, css, limit=60):
        """Presses Tab until the element `css` names has the focus; fails if it never gets it."""
        from selenium.webdriver.common.keys import Keys

        target = self.find(css)
        for _ in range(limit):
            if self.driver.switch_to.active_element == target:
                return target
            self.press(Keys.TAB)
        raise AssertionError(f"{limit} presses of Tab never reached {css}")

    def open(self):
        self.driver.get(self.server.url + "/")
        self.wait(
            lambda d: self.find("#sign-in-view").is_displayed() or self.find("#console-view").is_displayed(),
            "the page showed neither sign-in nor the console",
        )
        self.wait_idle()

    def reload(self):
        self.driver.refresh()
        self.wait(
            lambda d: self.find("#sign-in-view").is_displayed() or self.find("#console-view").is_displayed(),
            "the page showed neither sign-in nor the console after a reload",
        )
        self.wait_idle()

    def sign_in(self, token=None):
        self.open()
        field = self.wait_visible("#admin-token")
        field.clear()
        field.send_keys(token or self.server.admin_token)
        self.click("#sign-in-form button[type=submit]")
        self.wait_visible("#console-view")

    def sign_in_to_app(self, app_id):
        """Signs in and selects the app `app_id` (made beforehand, e.g. over the API)."""
        self.sign_in()
        self.click(f'#app-list .app-link[data-app-id="{app_id}"]')
        self.wait_text("#app-id-label", app_id)

    def create_app(self, app_id, name=""):
        self.find("#app-id").send_keys(app_id)
        if name:
            self.find("#app-name").send_keys(name)
        self.click("#create-app-form button[type=submit]")

    def create_and_open_app(self, app_id, name=""):
        self.create_app(app_id, name)
        self.wait_text("#app-id-label", app_id)
        self.wait_visible("#generate-open")

    def open_generate_dialog(self):
        """Clicks "Generate key" and waits for its dialog."""
        self.click("#generate-open")
        return self.wait_visible("#generate-dialog")

    def generate_key(self, description="", reusable=False, ephemeral=False, expiry_label=None, fill=None):
        """Opens the generate dialog, fills it in (`fill(self)` sets anything more) and submits
        it; returns the key shown in the one-time panel."""
        self.open_generate_dialog()
        description_field = self.find("#key-description")
        description_field.clear()
        description_field.send_keys(description)
        for box, wanted in (("#key-reusable", reusable), ("#key-ephemeral", ephemeral)):
            if self.find(box).is_selected() != wanted:
                self.find(box).click()
        if expiry_label is not None:
            Select(self.find("#key-expiry")).select_by_visible_text(expiry_label)
        if fill is not None:
            fill(self)
        self.click("#generate-form button[type=submit]")
        self.wait_hidden("#generate-dialog")
        self.wait_visible("#new-key-panel")
        self.wait(lambda d: self.find("#new-key-value").get_attribute("value"), "no key in the panel")
        return self.find("#new-key-value").get_attribute("value")

    def dismiss_key(self):
        self.click("#dismiss-key")
        self.wait_hidden("#new-key-panel")

    def refresh(self):
        self.click("#refresh")
        self.wait_text("#status", "Refreshed")

    def open_confirmation(self, button):
        """Clicks a button that asks for confirmation; returns the dialog's text."""
        button.click()
        dialog = self.wait_visible("#confirm-dialog")
        return dialog.text

    def confirm(self):
        self.find("#confirm-ok").click()
        self.wait_hidden("#confirm-dialog")
        self.wait_idle()

    def cancel(self):
        self.find("#confirm-cancel").click()
        self.wait_hidden("#confirm-dialog")
        self.wait_idle()
