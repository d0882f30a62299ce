"""Example tests using the fixtures in conftest.py. Run: AUTHKEYS_BIN=path/to/authkeys pytest"""

import json
import urllib.error
import urllib.request


def call(server, method, path, token=None, body=None):
    """(status, parsed JSON body or None, headers)"""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    return status, (json.loads(raw) if raw else None), headers


def test_a_machine_logs_in_and_is_logged_out_by_revocation(authkeys_server):
    admin = authkeys_server.admin_token
    assert admin.startswith("enadm_")
    assert call(authkeys_server, "POST", "/v1/apps", admin, {"id": "ci"})[0] == 201
    status, key, _ = call(authkeys_server, "POST", "/v1/apps/ci/keys", admin, {"reusable": True})
    assert status == 201

    status, login, _ = call(authkeys_server, "POST", "/v1/auth/login", body={"auth_key": key["key"]})
    assert status == 201
    session = login["session_token"]
    status, me, _ = call(authkeys_server, "GET", "/v1/auth/whoami", session)
    assert (status, me["app"]["id"]) == (200, "ci")

    assert call(authkeys_server, "DELETE", f"/v1/apps/ci/keys/{key['id']}", admin)[0] == 204
    status, error, _ = call(authkeys_server, "GET", "/v1/auth/whoami", session)
    assert (status, error["error"]["code"]) == (401, "invalid_credentials")


def test_each_test_gets_a_fresh_server(authkeys_server):
    status, apps, _ = call(authkeys_server, "GET", "/v1/apps", authkeys_server.admin_token)
    assert (status, apps) == (200, {"apps": [], "next_cursor": None})


def test_a_seeded_key_logs_in_without_admin_calls(seeded_server):
    status, login, _ = call(seeded_server, "POST", "/v1/auth/login", body={"auth_key": seeded_server.auth_key})
    assert (status, login["machine"]["app"]) == (201, "ci")
    status, body, headers = call(seeded_server, "GET", "/v1/forward-auth", login["session_token"])
    assert (status, body, headers["X-Authkeys-App"]) == (200, None, "ci")
