"""End to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

By default the test starts a small system of its own on a private dbus-daemon: the settings
service, fake battery / Sunny Island / SuperB-manager services (tests/web/fake_services.py;
the battery's ``/Info/MaxChargeVoltage`` follows the ``Superb/ChargeVoltage`` setting as
dbus-superb's does) and ``canbridge-web`` bound to 127.0.0.1 on a free port.

To run it against an already running system (the demo), set ``CANBRIDGE_E2E_URL`` (the page),
``CANBRIDGE_E2E_DBUS`` (its D-Bus address), ``CANBRIDGE_E2E_PASSWORD`` (empty for none) and
optionally ``CANBRIDGE_E2E_BATTERY`` (the battery service whose MaxChargeVoltage must follow).

Screenshots of every page go to ``artifacts/web/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dbus
import pytest

from tests.fixtures.procs import Proc, child_env, python_cmd
from tests.web.conftest import PASSWORD, Bus, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ARTIFACTS", ROOT / "artifacts")) / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CV = "/Settings/CanBridge/Superb/ChargeVoltage"
NODE_IDS = "/Settings/CanBridge/Superb/NodeIds"


@dataclass
class System:
    url: str
    bus: Bus
    password: str
    battery: str | None
    bus_address: str = ""


@pytest.fixture
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    url = os.environ.get("CANBRIDGE_E2E_URL")
    if url:
        bus = Bus(os.environ["CANBRIDGE_E2E_DBUS"])
        yield System(url.rstrip("/"), bus, os.environ.get("CANBRIDGE_E2E_PASSWORD", ""),
                     os.environ.get("CANBRIDGE_E2E_BATTERY"), os.environ["CANBRIDGE_E2E_DBUS"])
        bus.close()
        return
    daemon = request.getfixturevalue("dbus_daemon")
    request.getfixturevalue("settings_service")
    procs: list[Proc] = request.getfixturevalue("procs")
    pw = request.getfixturevalue("password_file")
    env = child_env(daemon.env())
    fake = Proc(python_cmd("tests.web.fake_services", "--interval", "0.3"), env, "fake")
    procs.append(fake)
    fake.wait_for(r"^ready$", 20)
    web = Proc(python_cmd("webui.main", "--listen", "127.0.0.1", "--port", "0",
                          "--password-file", str(pw), "--history-interval", "0.5"),
               env, "canbridge-web")
    procs.append(web)
    _, line = web.wait_for(r"listening on http://127\.0\.0\.1:\d+/", 20)
    m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    assert m is not None
    bus = Bus(daemon.address)
    yield System(m.group(1), bus, PASSWORD, "com.victronenergy.battery.fake_superb_1",
                 daemon.address)
    bus.close()


def battery_limit(system: System) -> Any:
    """``/Info/MaxChargeVoltage`` of the battery that is the BMS for DVCC.

    Without ``CANBRIDGE_E2E_BATTERY``: the one battery service that publishes the path (in
    aggregate mode only the aggregate does).
    """
    if system.battery is not None:
        return system.bus.get("/Info/MaxChargeVoltage", service=system.battery)
    names = [str(n) for n in system.bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "ListNames", iface="org.freedesktop.DBus")]
    limits = []
    for name in sorted(n for n in names if n.startswith("com.victronenergy.battery.")):
        try:
            limits.append(system.bus.get("/Info/MaxChargeVoltage", service=name))
        except dbus.exceptions.DBusException:
            continue  # a per-battery service in aggregate mode: not a BMS
    assert len(limits) == 1, f"expected one BMS battery service, found {len(limits)}"
    return limits[0]


def test_browser_end_to_end(system: System) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))  # uncaught JS errors
            history_urls: list[str] = []
            page.on("request", lambda req: history_urls.append(req.url)
                    if "/api/history" in req.url else None)
            page.goto(system.url + "/")

            # log in (the page asks only when the GX has a password)
            if "/login" in page.url:
                page.screenshot(path=str(ARTIFACTS / "login.png"))
                page.fill("#password", "wrong")
                page.click("button[type=submit]")
                expect(page.locator("#login-error")).to_contain_text("wrong password")
                page.fill("#password", system.password)
                page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Status")

            # live values move on the status page
            soc = page.locator("[data-service] .voltage").first
            expect(soc).not_to_have_text("---", timeout=10000)
            first = soc.inner_text()
            expect(soc).not_to_have_text(first, timeout=10000)
            page.wait_for_timeout(5500)  # let the charts gather a few samples
            page.screenshot(path=str(ARTIFACTS / "status.png"), full_page=True)
            # the hour of history once, then only what is new
            wait_until(lambda: len(history_urls) >= 2, 8, "a second history poll")
            assert "since=" not in history_urls[0]
            assert all(re.search(r"[?&]since=\d", u) for u in history_urls[1:]), history_urls

            # change the charge voltage (by 0.1 V, so it suits a 12 V or a 48 V system)
            before = float(system.bus.get(CV))
            new = round(before + 0.1 if before <= 59.9 else before - 0.1, 2)
            page.click("text=Settings")
            page.click("nav.side >> text=SuperB charge limits")
            field = page.locator("#f-Superb-ChargeVoltage")
            field.fill(f"{new:.2f}")
            page.click("#save")
            expect(page.locator(".flash.ok")).to_contain_text(f"Charge voltage = {new:.2f} V")
            assert system.bus.get(CV) == pytest.approx(new)
            wait_until(lambda: battery_limit(system) == pytest.approx(new), 10,
                       "/Info/MaxChargeVoltage to follow the setting")
            page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)

            # out of range: the server's error, nothing written
            page.locator("#f-Superb-ChargeVoltage").fill("75")
            page.click("#save")
            expect(page.locator("#row-Superb-ChargeVoltage .error")).to_contain_text(
                "75.0 is above the maximum 60")
            assert system.bus.get(CV) == pytest.approx(new)
            page.screenshot(path=str(ARTIFACTS / "settings-error.png"), full_page=True)

            # a change made elsewhere appears without reloading
            page.goto(system.url + "/settings/superb_limits")
            assert system.bus.set(CV, before) == 0
            expect(page.locator("#f-Superb-ChargeVoltage")).to_have_value(f"{before:.2f}",
                                                                         timeout=6000)

            # finding batteries and using their node IDs
            page.click("text=Find batteries")
            page.click("#scan-start")
            expect(page.locator("#scan-table tbody tr")).to_have_count(3, timeout=10000)
            page.click("#scan-use")
            expect(page.locator("#scan-ok")).to_contain_text("Node IDs set to 1,2,3")
            assert system.bus.get(NODE_IDS) == "1,2,3"
            page.screenshot(path=str(ARTIFACTS / "scan.png"), full_page=True)

            page.click("header >> text=Diagnostics")
            expect(page.locator("#diag details").first).to_be_visible(timeout=5000)
            page.screenshot(path=str(ARTIFACTS / "diagnostics.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()


def _logged_in_page(browser: Any, system: System, **kw: Any) -> Any:
    page = browser.new_page(**kw)
    page.goto(system.url + "/")
    if "/login" in page.url:
        page.fill("#password", system.password)
        page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def _settings_groups(system: System) -> list[str]:
    from driver.schema import load_schema

    return [g.id for g in load_schema().groups]


def test_phone_layout_has_no_horizontal_overflow(system: System) -> None:
    """Issue 14: at 390 px the status page was 420 px wide and diagnostics 978 px."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3,
             "is_mobile": True, "has_touch": True}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**phone)
            page.goto(system.url + "/login")
            widths = {"login": page.evaluate("document.documentElement.scrollWidth")}
            page = _logged_in_page(browser, system, **phone)
            pages = {"status": ("/", "[data-service] .voltage"),
                     "batteries": ("/batteries", "#scan-start"),
                     "diagnostics": ("/diagnostics", "#diag details")}
            for g in _settings_groups(system):
                pages[f"settings-{g}"] = (f"/settings/{g}", "#settings-form")
            for name, (path, ready) in pages.items():
                page.goto(system.url + path)
                expect(page.locator(ready).first).to_be_visible(timeout=10000)
                if name == "status":
                    expect(page.locator(ready).first).not_to_have_text("---", timeout=10000)
                if name == "diagnostics":
                    for d in page.locator("#diag details").all():
                        d.evaluate("d => d.open = true")
                page.wait_for_timeout(300)
                widths[name] = page.evaluate(
                    "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
                page.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=True)
            wide = {k: w for k, w in widths.items() if w > 390}
            assert not wide, f"wider than the 390 px phone: {wide}"
        finally:
            browser.close()


def test_form_sends_only_the_changed_field(system: System) -> None:
    """Saving one setting must not rewrite the others (NodeIds 1-3 became 1,2,3)."""
    from playwright.sync_api import expect, sync_playwright

    poll = "/Settings/CanBridge/Superb/PollInterval"
    before_ids, before_poll = system.bus.get(NODE_IDS), float(system.bus.get(poll))
    assert system.bus.set(NODE_IDS, "1-3") == 0
    new_poll = 2.5 if before_poll != 2.5 else 3.0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _logged_in_page(browser, system, viewport={"width": 1280, "height": 900})
            posts: list[str] = []
            page.on("request", lambda req: posts.append(req.post_data or "")
                    if req.method == "POST" and "/settings/" in req.url else None)
            page.goto(system.url + "/settings/superb")
            expect(page.locator("#f-Superb-NodeIds")).to_have_value("1-3")
            page.locator("#f-Superb-PollInterval").fill(str(new_poll))
            page.click("#save")
            expect(page.locator(".flash.ok")).to_contain_text("Poll interval")
            assert len(posts) == 1
            sent = sorted(k.split("=")[0] for k in posts[0].split("&"))
            assert sent == ["Superb%2FPollInterval", "csrf_token", "orig%3ASuperb%2FPollInterval"]
            assert system.bus.get(NODE_IDS) == "1-3"
            assert float(system.bus.get(poll)) == new_poll
        finally:
            browser.close()
            system.bus.set(NODE_IDS, before_ids)
            system.bus.set(poll, dbus.Double(before_poll))


def test_dns_rebinding_in_the_browser(system: System) -> None:
    """Chromium resolves attacker.example to the GX (what DNS rebinding achieves): the page
    answers 421 to that name, so the attacker's script gets nothing and can write nothing."""
    from playwright.sync_api import sync_playwright

    m = re.match(r"http://([^/:]+):(\d+)", system.url)
    assert m is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, f"--host-resolver-rules=MAP attacker.example {m.group(1)}"])
        try:
            page = browser.new_page()
            r = page.goto(f"http://attacker.example:{m.group(2)}/api/session")
            assert r is not None and r.status == 421
            status = page.evaluate("""async () => {
                const r = await fetch("/api/settings", {method: "POST",
                  headers: {"Content-Type": "application/json"},
                  body: JSON.stringify({"Superb/ChargeVoltage": 14.6})});
                return r.status; }""")
            assert status == 421
        finally:
            browser.close()


def test_refused_value_shows_on_the_settings_page(system: System, tmp_path: Path) -> None:
    """A driver refuses float voltage above absorption: the page shows the refusal and the
    value in force (written back by the driver), by itself. Own system: the real LiveSettings
    in tests/venus/live_settings_host.py; the demo: dbus-sma."""
    import json
    import subprocess

    from playwright.sync_api import expect, sync_playwright

    floatv = "/Settings/CanBridge/Sma/FloatVoltage"
    host = None
    if not os.environ.get("CANBRIDGE_E2E_URL"):
        host = subprocess.Popen(python_cmd("tests.venus.live_settings_host"),
                                env=child_env({"DBUS_SESSION_BUS_ADDRESS": system.bus_address}),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                bufsize=1)
        assert host.stdout is not None and host.stdin is not None
        assert json.loads(host.stdout.readline()) == {"event": "ready"}
        host.stdin.write("publish com.victronenergy.canbridge.sma_test\n")
        host.stdin.flush()
        host.stdout.readline()
    before = float(system.bus.get(floatv))
    absorption = float(system.bus.get("/Settings/CanBridge/Sma/AbsorptionVoltage"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = _logged_in_page(browser, system, viewport={"width": 1280, "height": 900})
                page.goto(system.url + "/settings/sma_charge")
                bad = round(absorption + 0.5, 1)
                assert system.bus.set(floatv, dbus.Double(bad)) == 0
                expect(page.locator(".refusal")).to_contain_text(
                    f"Float voltage = {bad}: float voltage must not be above absorption "
                    "voltage", timeout=8000)
                expect(page.locator("#f-Sma-FloatVoltage")).to_have_value(
                    re.compile(rf"^{before:.1f}"), timeout=8000)
                page.screenshot(path=str(ARTIFACTS / "refusal.png"), full_page=True)
            finally:
                browser.close()
        assert float(system.bus.get(floatv)) == before
    finally:
        if host is not None and host.stdin is not None:
            host.stdin.write("quit\n")
            host.stdin.flush()
            host.wait(10)
