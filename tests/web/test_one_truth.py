"""Issue 14 with the Flask test client and the real backend: redirects, the Secure cookie,
forms that write only what changed, refusals of a real driver shown on the page, "last read"
and incremental history."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import dbus
import pytest
from werkzeug.datastructures import MultiDict

from tests.fixtures.procs import child_env, python_cmd
from tests.web.conftest import login, wait_until
from tests.web.test_pages import parse

P = "/Settings/CanBridge/"


# -- 4. redirect targets ---------------------------------------------------------------------
@pytest.mark.parametrize("target", [
    "/%09/evil.example", "/%2f/evil.example", "/%5cevil.example", "/\t/evil.example",
    "/\n/", "/\r\n/x", "//evil.example",
    "/\\evil.example", "/\\/evil.example", "https://evil.example/", "https:evil.example",
    "javascript:alert(1)", "/ /evil", "/\x00", "/\u00e9", "evil", "",
])
def test_login_redirect_goes_only_to_same_site_paths(client: Any, target: str) -> None:
    token = client.get("/api/session").get_json()["csrf_token"]
    from tests.web.conftest import PASSWORD

    r = client.post("/login", query_string={"next": target},
                    data={"csrf_token": token, "password": PASSWORD})
    assert r.status_code == 302
    assert r.headers["Location"] == "/", target
    r = client.get("/login", query_string={"next": target})  # logged in: straight there
    assert r.status_code == 302 and r.headers["Location"] == "/", target


def test_login_redirect_keeps_a_real_page(client: Any) -> None:
    token = client.get("/api/session").get_json()["csrf_token"]
    from tests.web.conftest import PASSWORD

    r = client.post("/login", query_string={"next": "/settings/superb?x=1"},
                    data={"csrf_token": token, "password": PASSWORD})
    assert r.headers["Location"] == "/settings/superb?x=1"


# -- 6. the Secure cookie ----------------------------------------------------------------------
def test_secure_cookie_only_for_https_or_a_local_proxy(app: Any) -> None:
    def cookie(**kw: Any) -> str:
        c = app.test_client()
        r = c.get("/api/session", **kw)
        return str(r.headers["Set-Cookie"]).lower()

    assert "secure" in cookie(base_url="https://127.0.0.1")
    assert "secure" in cookie(headers={"X-Forwarded-Proto": "https"},
                              environ_base={"REMOTE_ADDR": "127.0.0.1"})
    # anyone else claiming HTTPS is not believed (and plain HTTP gets no Secure cookie)
    assert "secure" not in cookie(headers={"X-Forwarded-Proto": "https"},
                                  environ_base={"REMOTE_ADDR": "192.168.1.23"})
    assert "secure" not in cookie()


def test_host_outside_the_allow_list_is_421_everywhere(client: Any) -> None:
    for path in ("/", "/login", "/api/session", "/static/app.css", "/no/such/page"):
        assert client.get(path, headers={"Host": "attacker.example"}).status_code == 421
    assert client.post("/api/login", headers={"Host": "attacker.example"},
                       json={"password": "x"}).status_code == 421


# -- 2. forms write only what changed --------------------------------------------------------
def _form(client: Any, group: str) -> MultiDict:
    """What the browser submits for the page as shown, script off: every control."""
    html = client.get(f"/settings/{group}").data
    controls = parse(html).controls
    data: MultiDict = MultiDict()
    for name, items in controls.items():
        for c in items:
            if c.get("type") == "checkbox" and "checked" not in c:
                continue
            if c["tag"] == "select":
                continue
            data.add(name, c.get("value") or "")
    # selects: the selected option (parse() keeps only option values: take the stored one)
    return data


def test_saving_one_field_leaves_the_others_as_stored(authed: tuple[Any, str], bus: Any) -> None:
    """Issue 14: the form rewrote untouched fields (NodeIds 1-3 -> 1,2,3, 56.834 -> 56.83)."""
    client, token = authed
    assert bus.set(P + "Superb/NodeIds", "1-3") == 0
    assert bus.set(P + "Superb/ScanRange", "1-20") == 0
    assert bus.set(P + "Superb/ChargeVoltage", dbus.Double(56.834)) == 0
    wait_until(lambda: client.get("/api/settings").get_json()["values"][
        "Superb/ChargeVoltage"] == 56.834, 5, "the values to reach the page")
    data = _form(client, "superb_limits")
    assert data["Superb/ChargeVoltage"] == "56.83"  # shown rounded ...
    data.setlist("Superb/MaxChargeCurrent", ["123"])
    data["csrf_token"] = token
    r = client.post("/settings/superb_limits", data=data)
    assert r.status_code == 302, r.data.decode()
    assert bus.get(P + "Superb/MaxChargeCurrent") == 123.0
    assert bus.get(P + "Superb/ChargeVoltage") == 56.834  # ... but not rewritten rounded
    data = _form(client, "superb")
    data.setlist("Superb/PollInterval", ["2.5"])
    data["csrf_token"] = token
    r = client.post("/settings/superb", data=data)
    assert r.status_code == 302, r.data.decode()
    assert bus.get(P + "Superb/PollInterval") == 2.5
    assert bus.get(P + "Superb/NodeIds") == "1-3"
    assert bus.get(P + "Superb/ScanRange") == "1-20"


# -- 1. refusals of a real driver on the page ------------------------------------------------
@pytest.fixture
def driver_host(settings_service: Any) -> Iterator[subprocess.Popen[str]]:
    """The real LiveSettings (tests/venus/live_settings_host.py) with a published service."""
    extra = {"VELIB_PYTHON": os.environ["VELIB_PYTHON"]} if os.environ.get("VELIB_PYTHON") \
        else {}
    p = subprocess.Popen(python_cmd("tests.venus.live_settings_host"),
                         env=child_env(settings_service.daemon.env(), **extra),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert p.stdout is not None and p.stdin is not None
    assert json.loads(p.stdout.readline()) == {"event": "ready"}
    p.stdin.write("publish com.victronenergy.canbridge.sma_test\n")
    p.stdin.flush()
    assert "published" in json.loads(p.stdout.readline())
    yield p
    p.stdin.write("quit\n")
    p.stdin.flush()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def test_a_refused_value_is_shown_with_what_is_in_force(authed: tuple[Any, str], bus: Any,
                                                        driver_host: Any) -> None:
    client, _ = authed
    t0 = time.time()
    assert bus.set(P + "Sma/FloatVoltage", dbus.Double(57.5)) == 0  # above absorption 56.8
    refusals = wait_until(lambda: client.get("/api/settings").get_json()["refusals"], 8,
                          "the refusal to reach the page")
    r = refusals[0]
    assert (r["setting"], r["value"], r["in_force"], r["rule"]) == (
        "Sma/FloatVoltage", 57.5, 54.0, "float voltage must not be above absorption voltage")
    assert t0 - 2 <= r["time"] <= time.time() + 2
    # every page shows what is in force: the settings service holds 54.0 again
    wait_until(lambda: client.get("/api/settings").get_json()["values"][
        "Sma/FloatVoltage"] == 54.0, 5, "the value in force")
    page = client.get("/settings/sma_charge").data.decode()
    assert ("The driver refused Float voltage = 57.5: float voltage must not be above "
            "absorption voltage. 54.0 is in force") in page
    assert 'id="f-Sma-FloatVoltage"' in page and 'value="54.0' in page
    assert client.get("/api/status").get_json()["refusals"][0]["setting"] == "Sma/FloatVoltage"


# -- 9. last read, incremental history -------------------------------------------------------
def test_last_update_is_the_last_read_not_the_last_change(authed: tuple[Any, str],
                                                          dbus_daemon: Any, procs: list) -> None:
    """A battery whose values do not change is still read every 0.2 s: "last update" stays
    small (it grew without bound: it was the time since a value last changed)."""
    from tests.fixtures.procs import Proc

    client, _ = authed
    p = Proc(python_cmd("tests.web.fake_services", "--interval", "0.2", "--steady"),
             child_env(dbus_daemon.env()), name="fake_services")
    procs.append(p)
    p.wait_for(r"^ready$", 20)
    bat = "com.victronenergy.battery.fake_superb_1"

    def battery() -> Any:
        for b in client.get("/api/status").get_json()["batteries"]:
            if b["service"] == bat:
                return b
        return None

    wait_until(battery, 10, "the battery")
    time.sleep(3.0)
    age = battery()["age"]
    assert age is not None and age < 1.5, age


def test_history_is_sent_incrementally(authed: tuple[Any, str], fake_services: Any) -> None:
    client, _ = authed
    bat = "com.victronenergy.battery.fake_superb_1"
    full = wait_until(lambda: (client.get("/api/history").get_json().get(bat) or {}).get(
        "t", [None] * 0)[5:] and client.get("/api/history").get_json()[bat], 15,
        "some history")
    last = full["t"][-1]
    newer = client.get("/api/history", query_string={"since": str(last)}).get_json()
    assert all(t > last for t in newer.get(bat, {}).get("t", []))
    assert len(newer.get(bat, {}).get("t", [])) < len(full["t"])
    later = wait_until(lambda: client.get("/api/history", query_string={
        "since": str(last)}).get_json().get(bat), 5, "a new sample")
    assert later["t"][0] > last and set(later) == {"t", "soc", "voltage", "current"}
    for bad in ("١٢", "abc", "1e5", "-1", "nan"):
        assert client.get("/api/history", query_string={"since": bad}).status_code == 400


def test_login_throttle_is_global(client: Any, app: Any) -> None:
    """The unit of the global budget: 40 addresses, 3 guesses each, at most 30 checked."""
    token = client.get("/api/session").get_json()["csrf_token"]
    statuses = []
    for i in range(40):
        for _ in range(3):
            r = client.post("/api/login", json={"password": "guess"},
                            headers={"X-CSRF-Token": token},
                            environ_base={"REMOTE_ADDR": f"10.0.{i}.1"})
            statuses.append(r.status_code)
    assert statuses.count(401) == 30 and statuses.count(429) == 90
    assert login is not None


def test_connection_cap_counts_an_ipv6_host_by_its_64() -> None:
    """One LAN host can use any number of addresses of its /64: they count together."""
    from webui.main import ConnectionCap, client_key

    cap = ConnectionCap(limit=3)
    keys = [client_key((f"2001:db8:0:1::{n:x}", 8090, 0, 0)) for n in range(1, 6)]
    assert len(set(keys)) == 1
    assert [cap.acquire(k) for k in keys] == [True, True, True, False, False]
    assert cap.acquire(client_key(("2001:db8:0:2::1", 8090, 0, 0)))  # another /64
    cap.release(keys[0])
    assert cap.acquire(keys[0])
    assert client_key(("::ffff:192.168.1.9", 1)) == client_key(("192.168.1.9", 1))


def test_host_allow_list_names_and_addresses() -> None:
    from webui.hosts import HostAllowList, interface_addresses

    extra = ["gx.home.arpa", " 10.9.8.7 "]
    hosts = HostAllowList(extra=lambda: extra,
                          addresses=lambda: {"192.168.1.50", "fe80::1:2", "2001:db8::50"},
                          hostname=lambda: "einstein")
    for ok in ("192.168.1.50", "192.168.1.50:8090", "[fe80::1:2]:8090", "[2001:DB8::50]",
               "einstein", "EINSTEIN.local:8090", "venus.local", "localhost:8090",
               "127.0.0.9", "[::1]:8090", "gx.home.arpa.", "10.9.8.7:8090"):
        assert hosts.allowed(ok), ok
    for bad in ("attacker.example", "192.168.1.51", "einstein.evil.example",
                "venus.local.evil.example", "", None, "[2001:db8::51]:8090", "1.2.3.4"):
        assert not hosts.allowed(bad), bad
    # the machine's own addresses are really read (loopback at least)
    assert "127.0.0.1" in interface_addresses()
