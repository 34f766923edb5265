"""qml/pin_api.py against a small git repository laid out like gui-v2 (two refs: a component
deleted in the second, as SettingsListNavigation was on gui-v2 main)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qml import pin_api

MODULE = """set (VictronVenusOS_QML_MODULE_SOURCES
    components/Page.qml
    components/Utils.js
    components/listitems/core/ListNavigation.qml
{extra}
    src/backendconnection.h
)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str], tag: str) -> str:
    for name, text in files.items():
        p = repo / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", tag)
    _git(repo, "tag", tag)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    gui = tmp_path / "gui-v2"
    gui.mkdir()
    _git(gui, "init", "-q")
    common = {
        "components/Page.qml": "import QtQuick\nFocusScope {\n\tproperty string title\n}\n",
        "components/Utils.js": "function validationResult(s, t) {\n}\n",
        "components/listitems/core/ListNavigation.qml":
            "import QtQuick\nItem {\n\tproperty string text\n\tsignal clicked\n}\n",
        "src/backendconnection.h": "class BackendConnection : public QObject\n{\n\tQ_OBJECT\n"
                                   "\tQML_ELEMENT\n\tQML_SINGLETON\npublic:\n\tQ_INVOKABLE QString "
                                   "serviceUidFromName(const QString &n, int i) const;\n};\n",
        "src/enums.h": " ".join(pin_api.ENUM_NAMES),
        "cmake/VeUtil_Sources.cmake": "src/veutil/inc/veutil/qt/ve_quick_item.hpp\n",
    }
    c1 = _commit(gui, {**common, "cmake/ModuleVenus_Sources.cmake": MODULE.format(
        extra="    components/listitems/core/SettingsListNavigation.qml"),
        "components/listitems/core/SettingsListNavigation.qml":
            "import QtQuick\nListNavigation {\n\tproperty string pageSource\n}\n"}, "v1.0.0")
    (gui / "components/listitems/core/SettingsListNavigation.qml").unlink()
    c2 = _commit(gui, {"cmake/ModuleVenus_Sources.cmake": MODULE.format(extra="")}, "v2.0.0")
    veutil = tmp_path / "veutil"
    veutil.mkdir()
    _git(veutil, "init", "-q")
    _commit(veutil, {"inc/veutil/qt/ve_quick_item.hpp":
                     "class VeQuickItem : public QObject {\n\tQ_PROPERTY(QVariant value READ "
                     "getValue NOTIFY valueChanged)\n};\n"}, "v1")
    return gui, veutil, {"v1.0.0": c1, "v2.0.0": c2}


def test_exports_and_commits_are_recorded(repos: tuple[Path, Path, dict[str, str]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    gui, veutil, commits = repos
    monkeypatch.setattr(pin_api, "GUI_V2_COMPONENTS",
                        ["Page", "ListNavigation", "BackendConnection"])
    doc = pin_api.pin(gui, veutil, ["v1.0.0", "v2.0.0"])
    assert doc["gui-v2"] == commits
    assert doc["exports"]["v1.0.0"] == sorted(
        ["Page", "Utils", "ListNavigation", "SettingsListNavigation", "BackendConnection",
         "VeQuickItem"])
    assert "SettingsListNavigation" not in doc["exports"]["v2.0.0"]
    assert doc["components"]["ListNavigation"]["signals"] == ["clicked"]
    assert doc["components"]["ListNavigation"]["qt_bases"] == ["Item"]
    assert doc["components"]["BackendConnection"]["functions"] == ["serviceUidFromName"]
    assert doc["components"]["VeQuickItem"]["properties"] == ["value"]


def test_a_component_missing_at_one_ref_stops_the_pin(
        repos: tuple[Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    gui, veutil, _ = repos
    monkeypatch.setattr(pin_api, "GUI_V2_COMPONENTS", ["Page", "SettingsListNavigation"])
    with pytest.raises(SystemExit, match=r"SettingsListNavigation is not exported by gui-v2 "
                                         r"v2\.0\.0"):
        pin_api.pin(gui, veutil, ["v1.0.0", "v2.0.0"])
