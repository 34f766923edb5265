"""Qt set-up for the QML tests: offscreen rendering of pages from the packed plugin resource.

PySide6 must be importable; when it is not, the tests fail (they never skip).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["QT_QUICK_BACKEND"] = "software"
# Qt's GLib event dispatcher would own GLib's default main context for the rest of the pytest
# process, so later tests whose D-Bus thread runs that context (the web backend) would hang.
# The round trip pumps GLib itself; Qt gets its own dispatcher.
os.environ["QT_NO_GLIB"] = "1"

try:
    from PySide6.QtCore import Q_ARG, QMetaObject, QObject, QResource, QUrl
    from PySide6.QtGui import QGuiApplication, QImage
    from PySide6.QtQml import QQmlEngine
    from PySide6.QtQuick import QQuickItem, QQuickView
except ImportError as exc:  # pragma: no cover - the failure is the point
    pytest.fail(f"PySide6 is required for the QML tests (make deps installs "
                f"PySide6-Essentials==6.8.3): {exc}", pytrace=False)

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "qml" / "stubs"
V2_IMPORTS = STUBS / "gui-v2"
CLASSIC_STUBS = STUBS / "classic"
HARNESS = STUBS / "harness" / "Harness.qml"
ARTIFACTS = ROOT / os.environ.get("ARTIFACTS", "artifacts") / "qml"


def app() -> QGuiApplication:
    """The process's QGuiApplication (created once)."""
    inst = QGuiApplication.instance()
    if inst is None:
        inst = QGuiApplication(["canbridge-qml-tests"])
    assert isinstance(inst, QGuiApplication)
    return inst


def process(seconds: float = 0.05, until: Callable[[], bool] | None = None) -> bool:
    """Run the Qt event loop for up to ``seconds`` (or until ``until()`` holds)."""
    a = app()
    deadline = time.monotonic() + seconds
    while True:
        a.processEvents()
        if until is not None and until():
            return True
        if time.monotonic() >= deadline:
            return until is None
        time.sleep(0.005)


def register_plugin(plugin_json: Path, workdir: Path) -> tuple[dict[str, Any], Path]:
    """Register the plugin's resource as gui-v2 does (base64 -> binary resource -> QResource).

    gui-v2 registers the decoded bytes from memory; PySide6 only binds the file variant of
    ``QResource.registerResource``, so the same bytes go through a file here.
    """
    doc = json.loads(plugin_json.read_text(encoding="utf-8"))
    data = base64.b64decode(doc["resource"], validate=True)
    rcc = workdir / f"{doc['name']}.rcc"
    rcc.write_bytes(data)
    if not QResource.registerResource(str(rcc)):
        pytest.fail("the plugin resource does not register as a Qt resource")
    return doc, rcc


class PageView:
    """A QQuickView showing the harness, with the QML warnings it produced."""

    def __init__(self, harness: Path, imports: list[Path]) -> None:
        app()
        self.view = QQuickView()
        self.engine: QQmlEngine = self.view.engine()
        for p in imports:
            self.engine.addImportPath(str(p))
        self.warnings: list[str] = []
        self.engine.warnings.connect(
            lambda ws: self.warnings.extend(w.toString() for w in ws))
        self.view.setResizeMode(QQuickView.ResizeMode.SizeRootObjectToView)
        self.harness = harness
        self.min_height = 0

    def singleton(self, uri: str, name: str) -> QObject:
        """A QML singleton of this engine (created on first use)."""
        obj = self.engine.singletonInstance(uri, name)
        if obj is None:
            pytest.fail(f"singleton {uri}.{name} not available: {self.warnings}")
        return obj

    def start(self, width: int, height: int) -> QObject:
        """Load the harness and show it offscreen."""
        self.view.setSource(QUrl.fromLocalFile(str(self.harness)))
        if self.view.status() != QQuickView.Status.Ready:
            pytest.fail(f"harness failed to load: {[e.toString() for e in self.view.errors()]}")
        self.view.resize(width, height)
        self.min_height = height
        self.view.show()
        process(0.05)
        root = self.view.rootObject()
        assert root is not None
        return root

    def load(self, url: str, with_device: bool = False) -> QQuickItem:
        """Load one page into the harness's Loader; fail with the QML warnings if it fails."""
        root = self.view.rootObject()
        self.warnings.clear()
        method = "load" if with_device else "loadPlain"
        QMetaObject.invokeMethod(root, method, Q_ARG("QVariant", url))
        loader = root.findChild(QObject, "loader")
        # Loader loads local and qrc files synchronously: an item now, or an error
        process(0.05)
        item = loader.property("item")
        if not isinstance(item, QQuickItem):
            pytest.fail(f"page {url} did not load: {self.warnings}")
        return item

    def fit_height(self, item: QQuickItem, top: int, maximum: int = 3200) -> None:
        """Make the window tall enough to show the whole list of ``item``."""
        lv = item.findChild(QQuickItem, "stubListView")
        assert lv is not None, "page has no list view"
        process(0.05)
        height = int(lv.property("contentHeight")) + 24 + top
        self.view.resize(self.view.width(), min(maximum, max(self.min_height, height)))
        process(0.1)

    def grab(self, name: str) -> Path:
        """Save a screenshot under artifacts/qml/ and return its path."""
        process(0.1)
        image: QImage = self.view.grabWindow()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        if not image.save(str(path)):
            pytest.fail(f"could not save screenshot {path}")
        return path

    def close(self) -> None:
        """Tear the view down."""
        self.view.close()
        self.view.deleteLater()
        process(0.02)


@contextmanager
def page_view(harness: Path, imports: list[Path]) -> Iterator[PageView]:
    """A :class:`PageView`, closed afterwards."""
    pv = PageView(harness, imports)
    try:
        yield pv
    finally:
        pv.close()


def unregister(rcc: Path) -> None:
    """Unregister a resource registered with :func:`register_plugin`."""
    QResource.unregisterResource(str(rcc))
