"""The gui-v2 pages show the driver's last refused value (issue 14: ``/CanBridge/LastRefusal``
of com.victronenergy.canbridge.superb for the SuperB pages), and nothing when there is none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driver.schema import load_schema
from qml import build as qbuild
from tests.qml import qtkit
from tests.qml.qtkit import HARNESS, V2_IMPORTS, page_view
from tests.qml.stubdata import MemoryStore, StubBackend

SETTINGS = "com.victronenergy.settings"
SUPERB = "com.victronenergy.canbridge.superb"
TEXT = ("Superb/ChargeVoltage = 61.0 refused: Charge voltage: 61.0 is above the maximum 60; "
        "56.8 stays in force")


@pytest.mark.parametrize("refusal", [TEXT, ""])
def test_superb_pages_show_the_last_refusal(tmp_path: Path, refusal: str) -> None:
    from PySide6.QtCore import QMetaObject
    from PySide6.QtQml import QQmlProperty
    from PySide6.QtQuick import QQuickItem

    schema = load_schema()
    built = qbuild.build(tmp_path / "qml", schema)
    (tmp_path / "rcc").mkdir()
    doc, rcc = qtkit.register_plugin(built.plugin_json, tmp_path / "rcc")
    try:
        values: dict[Any, Any] = {(SETTINGS, s.path): s.dbus_default() for s in schema}
        values[(SUPERB, "/CanBridge/LastRefusal")] = refusal
        backend = StubBackend(MemoryStore(values, {}))
        with page_view(HARNESS, [V2_IMPORTS]) as pv:
            glob = pv.singleton("Victron.VenusOS", "Global")
            glob.setProperty("_stubBackend", backend)
            assert QQmlProperty.write(glob, "systemSettings.serviceUid", "mock/" + SETTINGS)
            pv.start(800, 480)
            settings_url = next(i["url"] for i in doc["integrations"] if i["type"] == 1)
            page = pv.load(settings_url)
            nav = page.findChild(QQuickItem, "nav_superb_limits")
            # a tap runs the page's own onClicked: Global.pageManager.pushPage(url, {title})
            QMetaObject.invokeMethod(nav, "_stubTap")
            manager = QQmlProperty.read(glob, "pageManager")
            sub = pv.load(manager.property("_stubLastUrl"))
            assert pv.warnings == [], pv.warnings
            line = sub.findChild(QQuickItem, "refusal")
            assert line is not None
            assert QQmlProperty.read(line, "dataItem.uid") == (
                f"mock/{SUPERB}/CanBridge/LastRefusal")
            assert line.property("caption") == refusal
            assert (line.property("height") > 0) == bool(refusal)
            if refusal:
                pv.fit_height(sub, 48)
                pv.grab("gui-v2-refusal")
    finally:
        qtkit.unregister(rcc)


@pytest.mark.parametrize("refusal", [TEXT, ""])
def test_classic_pages_show_the_last_refusal(tmp_path: Path, refusal: str) -> None:
    """The classic gui shows the same line (issue 14: both GUIs): SuperB's from its manager
    service, SMA's from the vebus service systemcalc names; hidden when there is none."""
    from PySide6.QtCore import QUrl
    from PySide6.QtQuick import QQuickItem

    from tests.qml.test_qml_pages import classic_dir

    schema = load_schema()
    built = qbuild.build(tmp_path / "qml", schema)
    d = classic_dir(built, tmp_path)
    vebus = "com.victronenergy.vebus.canbridge_sma_can1"
    values: dict[Any, Any] = {(SETTINGS, s.path): s.dbus_default() for s in schema}
    values[(SUPERB, "/CanBridge/LastRefusal")] = refusal
    values[("com.victronenergy.system", "/VebusService")] = vebus
    values[(vebus, "/CanBridge/LastRefusal")] = refusal.replace("Superb/", "Sma/")
    backend = StubBackend(MemoryStore(values, {}))
    pages = {"superb": "PageCanBridgeSuperbLimits", "sma": None}
    with page_view(d / "ClassicHarness.qml", [qtkit.CLASSIC_STUBS]) as pv:
        pv.singleton("com.victron.velib", "StubBus").setProperty("_stubBackend", backend)
        pv.start(480, 272)
        sma_pages = sorted(f.stem for f in d.glob("PageCanBridgeSma*.qml"))
        assert sma_pages
        pages["sma"] = sma_pages[0]
        for who, stem in pages.items():
            page = pv.load(QUrl.fromLocalFile(str(d / f"{stem}.qml")).toString())
            assert pv.warnings == [], pv.warnings
            rows = [o for o in page.findChildren(QQuickItem)
                    if str(o.property("_stubLabel") or "").startswith("Refused by the driver")]
            shown = [r for r in rows if r.property("visible")]
            if refusal:
                assert len(shown) == 1, who
                want = refusal if who == "superb" else refusal.replace("Superb/", "Sma/")
                assert shown[0].property("_stubLabel") == "Refused by the driver: " + want
            else:
                assert shown == [], who
