"""Login with the GX password, sessions, CSRF, lockout and the security profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import PASSWORD, csrf, login, wait_until
from webui.password import LoginLimiter, PasswordPolicy, PasswordState, make_checker

CV = "/Settings/CanBridge/Superb/ChargeVoltage"
PROFILE = "/Settings/System/SecurityProfile"
# bcrypt of "secret" as the GX writes it (cost 8, $2a$ prefix)
KNOWN_HASH = b"$2a$08$XANk/ydg9dWTB1yTGS7ZU.a6H8oadybhTKG2r4MqBZmDHJ5zaJahG"


@pytest.mark.parametrize("method", ["bcrypt", "crypt"])
def test_both_checkers_verify_a_gx_hash(method: str) -> None:
    name, check = make_checker(method)
    assert name == method
    assert check(b"secret", KNOWN_HASH)
    assert not check(b"Secret", KNOWN_HASH)
    assert not check(b"", KNOWN_HASH)
    assert not check(b"secret", b"not a hash")


def test_pages_and_api_need_login(client: Any, bus: Any) -> None:
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert client.get("/settings/superb").status_code == 302
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/settings").status_code == 401
    token = csrf(client)
    r = client.post("/api/settings", json={"Superb/ChargeVoltage": 14.5},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 401
    r = client.post("/settings/superb_limits", data={"csrf_token": token,
                                                      "Superb/ChargeVoltage": "14.5"})
    assert r.status_code == 401
    assert b"nothing was changed" in r.data
    assert bus.get(CV) == pytest.approx(14.2)


def test_login_wrong_then_right_password(client: Any) -> None:
    token = csrf(client)
    r = client.post("/login", data={"csrf_token": token, "password": "wrong"})
    assert r.status_code == 401
    assert b"wrong password" in r.data
    assert client.get("/api/status").status_code == 401
    r = client.post("/login", data={"csrf_token": token, "password": PASSWORD,
                                    "next": "/diagnostics"})
    assert r.status_code == 302 and r.headers["Location"] == "/diagnostics"
    assert client.get("/api/status").status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_login_rotates_csrf_token_and_logout_ends_session(client: Any) -> None:
    before = csrf(client)
    after = login(client)
    assert after != before
    r = client.post("/api/logout", headers={"X-CSRF-Token": after})
    assert r.status_code == 200
    assert client.get("/api/status").status_code == 401


def test_no_open_redirect_after_login(client: Any) -> None:
    token = csrf(client)
    r = client.post("/login", data={"csrf_token": token, "password": PASSWORD,
                                    "next": "//evil.example/x"})
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_csrf_token_required_for_every_change(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    body = {"Superb/ChargeVoltage": 14.5}
    r = client.post("/api/settings", json=body)
    assert r.status_code == 403 and "CSRF" in r.get_json()["error"]
    r = client.post("/api/settings", json=body, headers={"X-CSRF-Token": "x" + token})
    assert r.status_code == 403
    r = client.post("/settings/superb_limits", data={"Superb/ChargeVoltage": "14.5"})
    assert r.status_code == 403
    r = client.post("/settings/superb_limits/reset", data={"reset": "Superb/ChargeVoltage"})
    assert r.status_code == 403
    r = client.post("/api/scan")
    assert r.status_code == 403
    r = client.post("/api/settings", json=body, headers={"X-CSRF-Token": token,
                                                         "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert bus.get(CV) == pytest.approx(14.2)
    r = client.post("/api/settings", json=body, headers={"X-CSRF-Token": token,
                                                         "Origin": "http://localhost"})
    assert r.status_code == 200
    assert bus.get(CV) == pytest.approx(14.5)


def test_login_itself_needs_csrf_token(client: Any) -> None:
    csrf(client)
    r = client.post("/api/login", json={"password": PASSWORD})
    assert r.status_code == 403
    assert client.get("/api/status").status_code == 401


def test_lockout_after_ten_failures_doubles(backend: Any, make_app: Any) -> None:
    now = [1000.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    client = make_app(backend, LOGIN_LIMITER=limiter).test_client()
    token = csrf(client)

    def attempt(pw: str) -> int:
        return int(client.post("/api/login", json={"password": pw},
                               headers={"X-CSRF-Token": token}).status_code)

    assert [attempt("bad") for _ in range(10)] == [401] * 10
    assert attempt(PASSWORD) == 429  # locked: even the right password is not checked
    now[0] += 29
    assert attempt(PASSWORD) == 429
    now[0] += 2
    assert attempt("bad") == 401  # 11th failure: 60 s
    assert attempt(PASSWORD) == 429
    now[0] += 59
    assert attempt(PASSWORD) == 429
    now[0] += 2
    assert attempt(PASSWORD) == 200
    token = csrf(client)
    assert attempt("bad") == 401  # a success clears the count


def test_session_ends_when_password_changes(authed: tuple[Any, str],
                                            password_file: Path) -> None:
    client, _ = authed
    assert client.get("/api/status").status_code == 200
    password_file.write_bytes(KNOWN_HASH)
    assert client.get("/api/status").status_code == 401
    login(client, "secret")


def test_empty_password_file_means_no_password(backend: Any, make_app: Any,
                                               tmp_path: Path, bus: Any) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    client = make_app(backend, PASSWORD_FILE=str(empty)).test_client()
    assert client.get("/").status_code == 200
    token = csrf(client)
    r = client.put("/api/settings/Superb/ChargeVoltage", json={"value": 14.3},
                   headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert bus.get(CV) == pytest.approx(14.3)
    # CSRF still applies without a password
    r = client.put("/api/settings/Superb/ChargeVoltage", json={"value": 14.4})
    assert r.status_code == 403


def test_missing_password_file_denies_unless_unsecured(settings_service: Any, bus: Any,
                                                        make_backend: Any, make_app: Any,
                                                        tmp_path: Path) -> None:
    bus.add_setting(PROFILE, 1, 0, 3)
    backend = make_backend()
    client = make_app(backend, PASSWORD_FILE=str(tmp_path / "missing.txt")).test_client()
    token = csrf(client)
    r = client.post("/api/login", json={"password": ""}, headers={"X-CSRF-Token": token})
    assert r.status_code == 401
    assert "no password is configured" in r.get_json()["error"]
    assert client.get("/api/status").status_code == 401
    # The user picks "unsecured" in the Remote Console: the page follows live.
    assert bus.set(PROFILE, 2) == 0
    wait_until(lambda: backend.security_profile() == 2, what="profile 2")
    assert client.get("/api/status").status_code == 200


def test_secure_profile_needs_a_password_even_with_empty_file(settings_service: Any, bus: Any,
                                                              make_backend: Any, make_app: Any,
                                                              tmp_path: Path) -> None:
    bus.add_setting(PROFILE, 0, 0, 3)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    backend = make_backend()
    assert backend.security_profile() == 0
    client = make_app(backend, PASSWORD_FILE=str(empty)).test_client()
    assert client.get("/api/status").status_code == 401
    token = csrf(client)
    r = client.post("/api/login", json={"password": ""}, headers={"X-CSRF-Token": token})
    assert r.status_code == 401


def test_password_file_setting_ignored_on_a_gx(backend: Any, make_app: Any, bus: Any,
                                               tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert bus.set("/Settings/CanBridge/Web/PasswordFile", str(empty)) == 0
    wait_until(lambda: backend.setting("/Settings/CanBridge/Web/PasswordFile") == str(empty))
    off_gx = make_app(backend, PASSWORD_FILE=None, ON_GX=False).test_client()
    assert off_gx.get("/api/status").status_code == 200
    on_gx = make_app(backend, PASSWORD_FILE=None, ON_GX=True).test_client()
    assert on_gx.get("/api/status").status_code == 401  # /data/conf/vncpassword.txt missing


def test_policy_reads_the_file_on_every_check(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    policy = PasswordPolicy(lambda: str(f), lambda: None)
    assert policy.state() is PasswordState.MISSING and not policy.verify("x").ok
    f.write_bytes(KNOWN_HASH + b"\n")
    assert policy.verify("secret").ok and not policy.verify("x").ok
    f.write_text("")
    assert policy.verify("anything").ok and not policy.password_needed()
