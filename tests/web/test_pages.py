"""The pages: generated from the schema, forms, escaping, live data, status, scan, diagnostics."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from driver.schema import Schema
from tests.web.conftest import wait_until
from webui import view

P = "/Settings/CanBridge/"


class Controls(HTMLParser):
    """Collects the form controls of a page by name."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: dict[str, list[dict[str, str | None]]] = {}
        self.options: dict[str, list[str]] = {}
        self._select: str | None = None
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select") and a.get("name"):
            self.controls.setdefault(str(a["name"]), []).append({"tag": tag, **a})
        if tag == "select":
            self._select = a.get("name")
        if tag == "option" and self._select:
            self.options.setdefault(self._select, []).append(str(a.get("value")))
        if tag == "script":
            self.scripts.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def parse(html: bytes) -> Controls:
    c = Controls()
    c.feed(html.decode())
    return c


def test_every_setting_has_the_right_control(authed: tuple[Any, str], schema: Schema) -> None:
    client, _ = authed
    seen = set()
    for group in schema.groups:
        r = client.get(f"/settings/{group.id}")
        assert r.status_code == 200
        page = r.data.decode()
        c = parse(r.data)
        assert group.help in page
        for s in schema.in_group(group.id):
            seen.add(s.key)
            ctl = c.controls[s.key]
            assert s.label in page and s.help.replace("'", "&#39;") in page
            assert f"Default: <span class=\"default\">{view.default_text(s)}" in page
            assert f'value="{s.key}">Reset to default' in page
            if s.widget == "number":
                (inp,) = ctl
                assert inp["type"] == "number"
                assert float(str(inp["min"])) == s.min and float(str(inp["max"])) == s.max
                assert inp["step"] == view.step(s)
                assert inp["value"] == view.fmt(s, s.default)
                if s.unit:
                    assert f'<span class="unit">{s.unit}</span>' in page
            elif s.widget == "option":
                assert ctl[0]["tag"] == "select"
                assert c.options[s.key] == [str(o.value) for o in s.options]
            elif s.widget == "switch":
                assert [x["type"] for x in ctl] == ["hidden", "checkbox"]
                assert ("checked" in ctl[1]) == bool(s.default)
            else:
                (inp,) = ctl
                assert inp["type"] == "text" and inp["maxlength"] == str(s.maxlength)
        assert not any("src" not in s for s in c.scripts), "inline script"
    assert seen == set(schema.by_key)


def test_form_save_shows_answer_and_keeps_input_on_error(authed: tuple[Any, str],
                                                         bus: Any) -> None:
    client, token = authed
    r = client.post("/settings/superb_limits", data={
        "csrf_token": token, "Superb/ChargeVoltage": "14.35", "Superb/MaxChargeCurrent": "100"})
    assert r.status_code == 302
    page = client.get(r.headers["Location"]).data.decode()
    assert "Saved: Charge voltage = 14.35 V (the settings service answered OK)." in page
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.35)
    r = client.post("/settings/superb_limits", data={
        "csrf_token": token, "Superb/ChargeVoltage": "99", "Superb/MaxChargeCurrent": "90"})
    assert r.status_code == 400
    page = r.data.decode()
    assert "Charge voltage: 99.0 is above the maximum 60" in page
    assert 'value="99"' in page and 'value="90"' in page  # what the user typed is kept
    assert bus.get(P + "Superb/MaxChargeCurrent") == 100.0  # the valid one was not written
    r = client.post("/settings/superb_limits", data={"csrf_token": token, "Bogus/X": "1"})
    assert r.status_code == 400 and "Unknown setting 'Bogus/X'" in r.data.decode()


def test_form_switch_and_option(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    # unchecked switch: only the hidden 0 is sent
    r = client.post("/settings/sma_safety", data={"csrf_token": token,
                                                  "Sma/UseStopStart": "0",
                                                  "Sma/ShutdownAction": "1"})
    assert r.status_code == 302
    assert bus.get(P + "Sma/UseStopStart") == 0 and bus.get(P + "Sma/ShutdownAction") == 1
    r = client.post("/settings/sma_safety", data=MultiDict([("csrf_token", token),
                                                            ("Sma/UseStopStart", "0"),
                                                            ("Sma/UseStopStart", "1")]))
    assert r.status_code == 302
    assert bus.get(P + "Sma/UseStopStart") == 1


def test_form_reset_to_default(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    assert bus.set(P + "Superb/PollInterval", 2.5) == 0
    r = client.post("/settings/superb/reset", data={"csrf_token": token,
                                                    "reset": "Superb/PollInterval",
                                                    "Superb/PollInterval": "2.5"})
    assert r.status_code == 302
    assert bus.get(P + "Superb/PollInterval") == 1.0
    page = client.get("/settings/superb").data.decode()
    assert "Poll interval reset to its default (1.0 s)." in page
    r = client.post("/settings/superb/reset", data={"csrf_token": token,
                                                    "reset": "Sma/FloatVoltage"})
    assert r.status_code == 400  # not a setting of this page


def test_script_in_text_setting_is_escaped(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    evil = '"><script>alert(1)</script>'
    r = client.put("/api/settings/Sma/BatteryService", json={"value": evil},
                   headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert bus.get(P + "Sma/BatteryService") == evil
    page = client.get("/settings/sma").data.decode()
    assert "<script>alert(1)" not in page
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "script-src 'self'" in client.get("/settings/sma").headers["Content-Security-Policy"]


def test_unknown_page_404(authed: tuple[Any, str]) -> None:
    client, _ = authed
    r = client.get("/settings/nope")
    assert r.status_code == 404 and b"no settings page" in r.data
    assert client.get("/api/nope").get_json()["error"]


def test_page_weight(authed: tuple[Any, str], schema: Schema) -> None:
    client, _ = authed
    assets = sum(len(client.get(u).data) for u in ("/static/app.css", "/static/app.js"))
    biggest = max(len(client.get(f"/settings/{g.id}").data) for g in schema.groups)
    others = max(len(client.get(u).data) for u in ("/", "/diagnostics", "/batteries"))
    assert assets + max(biggest, others) <= 200 * 1024
    # nothing from elsewhere: no external URL in any page or asset
    for u in ("/", "/settings/superb", "/diagnostics", "/batteries", "/static/app.css",
              "/static/app.js"):
        text = client.get(u).data.decode().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), u


def test_changes_made_elsewhere_reach_the_api(authed: tuple[Any, str], bus: Any) -> None:
    client, _ = authed
    version = client.get("/api/settings").get_json()["version"]
    assert bus.set(P + "Superb/MaxDischargeCurrent", 123.0) == 0
    got = wait_until(lambda: client.get("/api/settings").get_json(), 1)
    wait_until(lambda: client.get("/api/settings").get_json()["values"][
        "Superb/MaxDischargeCurrent"] == 123.0, 2, "the change to show")
    assert client.get("/api/settings").get_json()["version"] > version
    assert got
    d = client.get("/api/settings/Superb/MaxDischargeCurrent").get_json()
    assert d["value"] == 123.0 and d["default"] == 150.0 and d["unit"] == "A"
    sch = client.get("/api/schema").get_json()
    assert len(sch["settings"]) == len(sch["settings"]) and sch["rules"]


def test_status_api_shows_batteries_and_sunny_island(authed: tuple[Any, str],
                                                     fake_services: Any, bus: Any) -> None:
    client, token = authed

    def battery() -> Any:
        bats = client.get("/api/status").get_json()["batteries"]
        return bats[0] if bats and bats[0]["soc"] is not None else None

    b = wait_until(battery, 10, "the fake battery")
    assert b["service"] == "com.victronenergy.battery.fake_superb_1"
    assert b["title"] == "House battery" and b["connected"] == 1 and b["instance"] == 512
    assert b["alarms"]["HighTemperature"] == 1
    assert b["limits"]["charge_voltage"] == pytest.approx(14.2)
    first = (b["soc"], b["voltage"], b["current"])
    wait_until(lambda: (battery()["soc"], battery()["voltage"], battery()["current"]) != first,
               5, "values to move")
    # The battery follows the charge-voltage setting written through the API
    r = client.put("/api/settings/Superb/ChargeVoltage", json={"value": 14.4},
                   headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    wait_until(lambda: battery()["limits"]["charge_voltage"] == pytest.approx(14.4), 5,
               "MaxChargeVoltage to follow")
    si = client.get("/api/status").get_json()["vebus"][0]
    assert si["state_text"] == "Inverting" and si["mode_text"] == "On"
    assert si["ac_in"]["L1"]["V"] == 230.0 and si["energy"]["AcIn1ToAcOut"] == 12.5
    assert si["ladder"] == "normal" and si["charge_phase"] == "absorption"
    assert si["bridge"]["/CanBridge/Ladder"] == "normal"
    assert si["battery_source"] == "com.victronenergy.battery.superb_aggregate"
    assert si["soc_source"] == "com.victronenergy.battery.ttyS5"
    hist = wait_until(lambda: len(client.get("/api/history").get_json().get(
        b["service"], {}).get("t", [])) >= 3 and client.get("/api/history").get_json(), 5)
    series = hist[b["service"]]
    assert len(series["t"]) == len(series["soc"]) == len(series["voltage"])
    assert all(isinstance(v, float) for v in series["voltage"])


def test_service_leaving_disappears(authed: tuple[Any, str], fake_services: Any) -> None:
    client, _ = authed
    wait_until(lambda: client.get("/api/status").get_json()["batteries"], 10)
    fake_services.stop()
    wait_until(lambda: not client.get("/api/status").get_json()["batteries"], 5,
               "the battery to go")


def test_diagnostics_lists_every_path(authed: tuple[Any, str], fake_services: Any) -> None:
    client, _ = authed

    def diag() -> Any:
        d = client.get("/api/diagnostics").get_json()
        return d if len(d["services"]) == 3 and all(s["paths"] for s in d["services"]) else None

    d = wait_until(diag, 10, "three services")
    first = d["services"][0]
    assert first["service"] == "com.victronenergy.canbridge.superb_fake"
    paths = {r["path"]: r for r in first["paths"]}
    assert "/Link/vecan0/FramesReceived" in paths and "/Node/1/SdoTimeouts" in paths
    assert paths["/Node/1/SdoTimeouts"]["age"] >= 0
    assert d["web"]["settings_available"] is True
    (node,) = first["nodes"]  # dbus-superb's per-node table, from /Status/Nodes
    assert node["node"] == "1" and node["sdo_timeouts"] == 2 and node["sdo_aborts"] == 1
    assert node["serial"] == "SB123456"  # the fake names its node like its battery
    assert client.get("/diagnostics").status_code == 200


def test_scan_and_use_node_ids(authed: tuple[Any, str], fake_services: Any, bus: Any) -> None:
    client, token = authed
    wait_until(lambda: client.get("/api/scan").get_json()["available"], 10)
    assert client.get("/api/scan").get_json()["nodes"] == []
    r = client.post("/api/scan", headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    r = client.post("/api/scan", headers={"X-CSRF-Token": token})  # one at a time
    assert r.status_code == 409
    assert r.get_json()["error"] == ("the SuperB driver did not start a scan: a scan is "
                                     "already running")
    state = wait_until(lambda: (s := client.get("/api/scan").get_json())["nodes"] and
                       not s["running"] and s, 10, "scan to finish")
    assert [n["node"] for n in state["nodes"]] == [1, 2, 3]
    assert state["nodes"][0]["serial"] == "SB001" and state["nodes"][0]["firmware"] == "1.2.3"
    r = client.put("/api/settings/Superb/NodeIds", json={"value": state["node_ids"]},
                   headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert bus.get(P + "Superb/NodeIds") == "1,2,3"


def test_scan_without_driver_is_a_clear_error(authed: tuple[Any, str]) -> None:
    client, token = authed
    assert client.get("/api/scan").get_json()["available"] is False
    r = client.post("/api/scan", headers={"X-CSRF-Token": token})
    assert r.status_code == 503 and "dbus-superb" in r.get_json()["error"]
