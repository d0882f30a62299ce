"""Fixtures for the dashboard's browser suite.

`server` runs the real authkeys binary on 127.0.0.1:0 with a throwaway in-memory database and
reads its ready line (the bound socket is the readiness signal: no sleeps, no fixed ports).
`browser` is Debian's headless Chromium driven through chromedriver by Selenium, with a fresh
profile per test. `dashboard` (in dashboard.py) wraps the page in the actions a person takes.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from dashboard import Dashboard

REPO = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
SCREENSHOTS = TARGET / "screenshots"
READY_TIMEOUT_SECS = 30


def binary():
    path = pathlib.Path(os.environ.get("AUTHKEYS_BIN", TARGET / "debug" / "authkeys"))
    if not path.is_file():
        pytest.fail(f"the authkeys binary is missing at {path}: run `cargo build` first", pytrace=False)
    return path


def required_program(name, package):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (scripts/test does this)", pytrace=False)
    return path


def read_ready_line(process):
    """The JSON line a process prints when it is ready, or None if none comes in time."""
    lines = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_SECS)
    return json.loads(lines[0]) if lines and lines[0].strip() else None


class Server:
    """A running authkeys process and a plain HTTP client for it."""

    def __init__(self, directory, extra_args=()):
        self.log_path = directory / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(binary()), "serve", "--db", ":memory:", "--listen", "127.0.0.1:0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            # No configured admin token: the server generates one and prints it in the ready line.
            env={**{k: v for k, v in os.environ.items() if k != "AUTHKEYS_ADMIN_TOKEN"}, "RUST_LOG": "debug"},
        )
        ready = self._ready_line()
        self.url = ready["url"]
        self.admin_token = ready["admin_token"]

    def _ready_line(self):
        ready = read_ready_line(self.process)
        if ready is None:
            self.stop()
            pytest.fail(f"authkeys printed no ready line\n--- server log ---\n{self.log()}", pytrace=False)
        return ready

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def request(self, method, path, body=None, token=None):
        """Sends one request; returns (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        return status, (json.loads(raw) if raw else None)

    def admin(self, method, path, body=None):
        return self.request(method, path, body, token=self.admin_token)

    def login(self, auth_key, machine=None):
        """Logs a machine in with an auth key, as `authkeys login` would; returns its session token."""
        body = {"auth_key": auth_key}
        if machine is not None:
            body["machine"] = machine
        status, reply = self.request("POST", "/v1/auth/login", body)
        assert status == 201, (status, reply)
        return reply["session_token"]

    def whoami_status(self, session_token):
        return self.request("GET", "/v1/auth/whoami", token=session_token)[0]


@pytest.fixture(scope="session", autouse=True)
def fresh_screenshots():
    """Starts each run with an empty screenshot directory, so every picture is from this run."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "server_args(*args): extra arguments for `authkeys serve`")


@pytest.fixture
def server(tmp_path, request):
    marker = request.node.get_closest_marker("server_args")
    running = Server(tmp_path, marker.args if marker else ())
    yield running
    running.stop()


@pytest.fixture
def oidc_issuer():
    """`authkeys dev-oidc-issuer`, running: its ready line (the issuer's URL, its GitHub-Actions-
    like token endpoint and the request token that endpoint asks for). Plain http: a server
    trusts it only with `--oidc-allow-insecure-issuer`."""
    process = subprocess.Popen(
        [str(binary()), "dev-oidc-issuer"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        ready = read_ready_line(process)
        if ready is None:
            pytest.fail("authkeys dev-oidc-issuer printed no ready line", pytrace=False)
        yield ready
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = required_program("chromium", "chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=required_program("chromedriver", "chromium-driver"))
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can see whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def dashboard(browser, server, request):
    page = Dashboard(browser, server, SCREENSHOTS, request.node.name)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        page.screenshot(f"FAILED-{request.node.name}")
        print(f"--- server log ---\n{server.log()}")
        print(f"--- browser console ---\n{browser.get_log('browser')}")
    else:
        page.assert_no_console_errors()
