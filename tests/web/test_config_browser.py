"""Configuration export / import and the diagnostic bundle, in headless Chromium.

The page is the real app (``create_app``) served by waitress on 127.0.0.1 in this process,
wired to the real D-Bus backend, the settings service on a private dbus-daemon, the fake
battery / Sunny Island / SuperB-manager services and the loopback CAN link (a peer sends frames
while the bundle captures). The GX's file system is a fake root (``DIAG_ROOT``) with logs and
the password file, so the bundle's contents and the absence of secrets can be checked.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest

from tests.fixtures.canlink import CanLink
from tests.web.conftest import PASSWORD, Bus, wait_until
from tests.web.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

S = "/Settings/CanBridge/"


@pytest.fixture
def served(backend: Any, make_app: Any, fake_services: Any, canlink: CanLink,  # noqa: PLR0917
           password_file: Path, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    import waitress

    root = tmp_path / "root"
    (root / "var/log/canbridge-web").mkdir(parents=True)
    (root / "var/log/canbridge-web/current").write_bytes(
        b"web started\nsomething logged the hash " + password_file.read_bytes().strip()
        + b"\n")
    (root / "opt/victronenergy").mkdir(parents=True)
    (root / "opt/victronenergy/version").write_text("v3.60~21\n")
    app = make_app(backend, DIAG_ROOT=str(root), DIAG_MAX_SECONDS=30, TESTING=False)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", app
    finally:
        server.close()
        t.join(5)


def login(page: Any, url: str) -> None:
    page.goto(url + "/config/")
    if "/login" in page.url:
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
    page.wait_for_url(url + "/config/")


def test_export_import_and_bundle_in_the_browser(served: tuple[str, Any], bus: Bus,
                                                  password_file: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, app = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert bus.set(S + "Superb/NodeIds", "1-3") == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900},
                                    accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            login(page, url)
            page.screenshot(path=str(ARTIFACTS / "config.png"), full_page=True)

            # export: a download with every setting as in force
            with page.expect_download() as dl:
                page.click("#export-download")
            exported = json.loads(Path(dl.value.path()).read_text())
            assert dl.value.suggested_filename.startswith("canbridge-config-")
            assert exported["format"] == "canbridge-config"
            assert exported["venus_version"] == "v3.60~21"
            assert exported["settings"]["Superb/NodeIds"] == "1-3"
            assert exported["settings"]["Superb/ChargeVoltage"] == bus.get(
                S + "Superb/ChargeVoltage")

            # import of an invalid file: every problem named, nothing written
            bad = json.loads(json.dumps(exported))
            bad["settings"]["Superb/ChargeVoltage"] = 75.0
            bad["settings"]["Sma/NoSuchThing"] = 1
            page.set_input_files("#import-file", files=[{
                "name": "bad.json", "mimeType": "application/json",
                "buffer": json.dumps(bad).encode()}])
            page.click("#import-check")
            expect(page.locator("#import-refused")).to_contain_text("nothing was written")
            expect(page.locator("#import-errors")).to_contain_text(
                "Superb/ChargeVoltage: 75.0 is above the maximum 60")
            expect(page.locator("#import-errors")).to_contain_text(
                "Sma/NoSuchThing: unknown setting")
            page.screenshot(path=str(ARTIFACTS / "config-import-invalid.png"), full_page=True)
            assert bus.get(S + "Superb/ChargeVoltage") == exported["settings"][
                "Superb/ChargeVoltage"]

            # import of a valid file: the diff, then nothing until confirmed
            good = json.loads(json.dumps(exported))
            good["settings"].update({"Sma/AbsorptionVoltage": 58.0, "Sma/FloatVoltage": 57.5,
                                     "Superb/NodeIds": "1,2", "General/LogLevel": 2})
            page.goto(url + "/config/")
            page.set_input_files("#import-file", files=[{
                "name": "good.json", "mimeType": "application/json",
                "buffer": json.dumps(good).encode()}])
            page.click("#import-check")
            expect(page.locator("#import-summary")).to_have_text("4 setting(s) would change:")
            row = page.locator("#import-diff tr[data-key='Sma/FloatVoltage']")
            expect(row.locator("td.old")).to_have_text("54.0 V")
            expect(row.locator("td.new")).to_have_text("57.5 V")
            expect(page.locator("#import-diff tr[data-key='Superb/NodeIds'] td.old")
                   ).to_have_text('"1-3"')
            page.screenshot(path=str(ARTIFACTS / "config-import-diff.png"), full_page=True)
            assert bus.get(S + "Sma/FloatVoltage") == 54.0  # shown, not written
            page.click("#import-confirm")
            expect(page.locator(".flash.ok")).to_contain_text(
                "Imported: 4 setting(s) written")
            assert bus.get(S + "Sma/AbsorptionVoltage") == 58.0
            assert bus.get(S + "Sma/FloatVoltage") == 57.5
            assert bus.get(S + "Superb/NodeIds") == "1,2"
            assert bus.get(S + "General/LogLevel") == 2

            # a confirmation after the settings changed elsewhere is shown again, not written
            page.goto(url + "/config/")
            page.set_input_files("#import-file", files=[{
                "name": "orig.json", "mimeType": "application/json",
                "buffer": json.dumps(exported).encode()}])
            page.click("#import-check")
            expect(page.locator("#import-summary")).to_have_text("4 setting(s) would change:")
            assert bus.set(S + "Sma/TaperBand", 0.5) == 0
            wait_until(lambda: app.extensions["canbridge"]["backend"].setting(
                S + "Sma/TaperBand") == 0.5, 5, "the page to see the change")
            page.click("#import-confirm")
            expect(page.locator("#import-warning")).to_contain_text("settings changed since")
            expect(page.locator("#import-summary")).to_have_text("5 setting(s) would change:")
            assert bus.get(S + "Sma/FloatVoltage") == 57.5
            page.click("#import-confirm")
            expect(page.locator(".flash.ok")).to_contain_text("Imported: 5 setting(s)")
            assert bus.get(S + "Superb/NodeIds") == "1-3"  # back, exactly as exported
            assert bus.get(S + "Sma/TaperBand") == exported["settings"]["Sma/TaperBand"]

            # the diagnostic bundle: from the diagnostics page, progress while capturing
            page.click("header >> text=Diagnostics")
            page.click("#bundle-link")
            page.fill("#bundle-seconds", "3")
            peer = can.Bus(interface="canlink", channel="can1")
            stop = threading.Event()

            def chatter() -> None:
                while not stop.wait(0.05):
                    peer.send(can.Message(arbitration_id=0x305,
                                          data=bytes.fromhex("1202f6ff14003c00"),
                                          is_extended_id=False))

            t = threading.Thread(target=chatter)
            t.start()
            try:
                page.click("#bundle-start")
                expect(page.locator("#bundle-progress")).to_be_visible()
                expect(page.locator("#bundle-text")).to_contain_text("capturing",
                                                                     timeout=10000)
                page.screenshot(path=str(ARTIFACTS / "config-bundle-progress.png"),
                                full_page=True)
                expect(page.locator("#bundle-ready")).to_be_visible(timeout=30000)
            finally:
                stop.set()
                t.join()
                peer.shutdown()
            page.screenshot(path=str(ARTIFACTS / "config-bundle.png"), full_page=True)
            with page.expect_download() as dl:
                page.click("#bundle-download")
            assert dl.value.suggested_filename.endswith(".tar.gz")
            data = Path(dl.value.path()).read_bytes()
            assert not errors, errors
        finally:
            browser.close()

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile()}
    assert {"manifest.json", "settings.json", "versions.json", "can/interfaces.json",
            "can/can1.log", "logs/canbridge-web/current"} <= set(files)
    assert any(n.startswith("dbus/com.victronenergy.canbridge.superb_fake") for n in files)
    frames = list(can.CanutilsLogReader(io.StringIO(files["can/can1.log"].decode())))
    assert len(frames) > 10 and all(m.arbitration_id == 0x305 for m in frames)
    # no secret: the password hash (planted in a log too) and the session key, anywhere
    whole = gzip.decompress(data)
    key = app.config["SECRET_KEY"]
    for secret in (password_file.read_bytes().strip(), key, key.hex().encode()):
        assert secret not in whole
    assert b"something logged the hash [redacted]" in files["logs/canbridge-web/current"]
    assert os.environ.get("CANBRIDGE_CANLINK")  # the capture ran on the loopback link
