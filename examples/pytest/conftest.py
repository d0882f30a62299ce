"""pytest fixtures that run a throwaway authkeys server for each test.

Copy this file into your test suite. It needs only the `authkeys` binary: on PATH, or named
by AUTHKEYS_BIN. Each fixture starts `authkeys serve --db :memory: --listen 127.0.0.1:0`,
waits for the one-line JSON ready message (the server listens once it is printed), and stops
the server after the test.
"""

import json
import os
import select
import subprocess
import tempfile

import pytest

AUTHKEYS = os.environ.get("AUTHKEYS_BIN", "authkeys")
READY_TIMEOUT_SECS = 30


class AuthkeysServer:
    def __init__(self, process, ready):
        self.process = process
        self.url = ready["url"]
        # Present only when the server generated the token (a :memory: database, no
        # AUTHKEYS_ADMIN_TOKEN in the environment).
        self.admin_token = ready.get("admin_token")


def start(*extra_args):
    env = {k: v for k, v in os.environ.items() if k != "AUTHKEYS_ADMIN_TOKEN"}
    env.setdefault("RUST_LOG", "warn")
    process = subprocess.Popen(
        [AUTHKEYS, "serve", "--db", ":memory:", "--listen", "127.0.0.1:0", *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    readable, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_SECS)
    line = process.stdout.readline() if readable else ""
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError(f"authkeys printed no ready line (exit status {process.returncode})")
    return AuthkeysServer(process, json.loads(line))


def stop(server):
    server.process.terminate()  # SIGTERM: answers in-flight requests, exits 0
    assert server.process.wait(timeout=10) == 0


@pytest.fixture
def authkeys_server():
    """A fresh server with an empty in-memory database and a generated admin token."""
    server = start()
    yield server
    stop(server)


def generate_key():
    """A new auth key for a seed file, from `authkeys generate-key`."""
    return subprocess.run(
        [AUTHKEYS, "generate-key"], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def seeded_server():
    """A server that already has app `ci` with a reusable key the test knows: no admin calls."""
    key = generate_key()
    seed = {"apps": [{"id": "ci", "keys": [{"key": key, "reusable": True}]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as seed_file:
        json.dump(seed, seed_file)
        seed_file.flush()
        server = start("--seed", seed_file.name)
    server.auth_key = key
    yield server
    stop(server)
