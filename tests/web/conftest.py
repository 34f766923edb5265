"""Fixtures for the web page's tests: the real D-Bus backend against the real settings service
(stand-in, or localsettings with ``LOCALSETTINGS``) on a private dbus-daemon, the Flask app
wired to it, a password file, and helpers to talk to the bus directly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import dbus
import pytest

from driver.schema import Schema, load_schema
from tests.fixtures.procs import Proc, child_env, python_cmd
from tests.fixtures.venus import DbusDaemon, SettingsService
from webui import create_app
from webui.dbus_backend import DbusBackend

PASSWORD = "s3cret pass"
BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.settings"


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Bus:
    """Blocking D-Bus calls from the test (another client, like the Remote Console)."""

    def __init__(self, address: str) -> None:
        self.conn = dbus.bus.BusConnection(address)

    def call(self, service: str, path: str, method: str, sig: str = "", *args: Any,
             iface: str = BUSITEM) -> Any:
        return self.conn.call_blocking(service, path, iface, method, sig, list(args))

    def get(self, path: str, service: str = SETTINGS) -> Any:
        from webui.dbus_backend import unwrap

        return unwrap(self.call(service, path, "GetValue"))

    def set(self, path: str, value: Any, service: str = SETTINGS) -> int:
        return int(self.call(service, path, "SetValue", "v", value))

    def add_setting(self, path: str, default: Any, minimum: Any = 0, maximum: Any = 0) -> Any:
        entry = {"path": dbus.String(path), "default": default, "min": minimum,
                 "max": maximum}
        return self.call(SETTINGS, "/", "AddSettings", "aa{sv}",
                         dbus.Array([dbus.Dictionary(entry, signature="sv")], signature="a{sv}"),
                         iface="com.victronenergy.Settings")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def schema() -> Schema:
    return load_schema()


@pytest.fixture
def bus(dbus_daemon: DbusDaemon) -> Iterator[Bus]:
    b = Bus(dbus_daemon.address)
    yield b
    b.close()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """The GX's format: a bcrypt $2a$08$ hash of PASSWORD."""
    f = tmp_path / "vncpassword.txt"
    f.write_bytes(bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(8, prefix=b"2a")) + b"\n")
    return f


@pytest.fixture
def make_backend(dbus_daemon: DbusDaemon, schema: Schema) -> Iterator[Callable[..., DbusBackend]]:
    """Start a DbusBackend (after the test prepared the bus); stopped at the end."""
    started: list[DbusBackend] = []

    def make(wait_settings: bool = True, **kw: Any) -> DbusBackend:
        kw.setdefault("history_interval", 0.2)
        kw.setdefault("call_timeout", 3.0)
        b = DbusBackend(schema, dbus_daemon.address, **kw)
        b.start()
        started.append(b)
        if wait_settings:
            wait_until(b.settings_available, 10, "the backend to read the settings")
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def backend(settings_service: SettingsService,
            make_backend: Callable[..., DbusBackend]) -> DbusBackend:
    return make_backend()


@pytest.fixture
def make_app(password_file: Path) -> Callable[..., Any]:
    def make(backend: DbusBackend, **config: Any) -> Any:
        cfg = {"BACKEND": backend, "PASSWORD_FILE": str(password_file), "ON_GX": False,
               "TESTING": True}
        cfg.update(config)
        return create_app(cfg)
    return make


@pytest.fixture
def app(backend: DbusBackend, make_app: Callable[..., Any]) -> Any:
    return make_app(backend)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def csrf(client: Any) -> str:
    return str(client.get("/api/session").get_json()["csrf_token"])


def login(client: Any, password: str = PASSWORD) -> str:
    """Log in through the JSON API; returns the session's CSRF token."""
    token = csrf(client)
    r = client.post("/api/login", json={"password": password},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 200, r.get_json()
    return str(r.get_json()["csrf_token"])


@pytest.fixture
def authed(client: Any) -> tuple[Any, str]:
    """(client, csrf token) of a logged-in session."""
    return client, login(client)


@pytest.fixture
def fake_services(dbus_daemon: DbusDaemon, procs: list[Proc]) -> Proc:
    """Fake battery, vebus and SuperB manager services in a helper process."""
    p = Proc(python_cmd("tests.web.fake_services", "--interval", "0.2"),
             child_env(dbus_daemon.env()), name="fake_services")
    procs.append(p)
    p.wait_for(r"^ready$", 20)
    return p
