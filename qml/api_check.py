"""Check QML pages against the pinned gui-v2 API (``qml/stubs/pinned_api.json``).

A gui-v2 plugin is plain QML loaded at run time: a type the running gui-v2 does not export
("X is not a type") or a property its component does not have ("Cannot assign to non-existent
property") makes the page fail to load, on the GX only. This check finds both offline, for every
gui-v2 commit pinned by ``qml/pin_api.py`` (oldest plugin-capable release, newest release,
``main``):

* every object type a page instantiates (``Type {``) must be exported by the
  ``Victron.VenusOS`` module at every pinned commit, or be one of the Qt Quick types below;
* every property, grouped property or signal handler set on an instance of a pinned component
  must exist in that component at every pinned commit (the pin holds the common names);
* ``Global.x``, ``Global.pageManager.x``, ``Global.systemSettings.x``, ``BackendConnection.x``,
  ``Utils.x`` and ``VenusOS.x`` must exist likewise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PINNED_FILE = Path(__file__).resolve().parent / "stubs" / "pinned_api.json"

# Types of Qt's own QtQuick/QtQml modules a page may use (they come with Qt, not gui-v2).
QT_TYPES = {"Item", "QtObject", "Component", "Connections", "Timer", "Binding", "Repeater",
            "Loader", "Column", "Row", "Text", "Rectangle"}
# Names every QObject/QQuickItem has in every Qt 6 (the pin records gui-v2's own names only).
QT_NAMES = {"objectName", "id", "visible", "enabled", "width", "height", "x", "y", "opacity",
            "Component"}
# Names CanBridge's pages use that a component inherits from Qt (the pin lists each
# component's Qt base types in "qt_bases"; tests/qml checks these names against the real Qt
# types with PySide6). QML name of each Qt base, for that check:
QT_BASE_NAMES: dict[str, set[str]] = {"ListView": {"model"}}
QT_BASE_QML = {"ListView": "ListView", "FocusScope": "FocusScope", "QQuickControl": "T.Control",
               "QtObject": "QtObject", "QObject": "QtObject"}
# Member chains and the component whose API they name.
CHAINS = {"Global.pageManager": "PageManager", "Global.systemSettings": "SystemSettings",
          "Global.venusPlatform": "VenusPlatform",
          "Global": "Global", "BackendConnection": "BackendConnection", "Utils": "Utils"}

_OBJ_RE = re.compile(r"^\s*([A-Z][\w.]*)\s*\{\s*$")
_ASSIGN_RE = re.compile(r"^\s*([a-z_][\w.]*)\s*:")
_DECL_RE = re.compile(r"^\s*(?:readonly\s+|required\s+|default\s+)*(?:property|signal|function)\b")
_CHAIN_RE = re.compile(r"\b(Global\.pageManager|Global\.systemSettings|Global\.venusPlatform|"
                       r"Global|BackendConnection|Utils|VenusOS)\.(\w+)")


@dataclass(frozen=True)
class Problem:
    """One use of API that is missing at some pinned gui-v2 commit."""

    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


def load_pinned(path: Path = PINNED_FILE) -> dict[str, Any]:
    """The pinned API document."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _strip(line: str) -> str:
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])*'", "''", line)
    return line.split("//", 1)[0]


def _allowed(pinned: dict[str, Any], comp: str) -> set[str]:
    api = pinned["components"].get(comp)
    if api is None:
        return set()
    names = set(api["properties"]) | set(api["functions"])
    sigs = set(api["signals"])
    handlers = {"on" + s[:1].upper() + s[1:] for s in sigs}
    changed = {"on" + p[:1].upper() + p[1:] + "Changed" for p in api["properties"]}
    qt: set[str] = set().union(*(QT_BASE_NAMES.get(b, set()) for b in api.get("qt_bases", [])))
    return names | sigs | handlers | changed | qt


def check_text(text: str, name: str, pinned: dict[str, Any]) -> list[Problem]:
    """Problems of one QML document."""
    exports: dict[str, list[str]] = pinned["exports"]
    problems: list[Problem] = []
    stack: list[str | None] = []  # the type of each open object ({ of a JS block: None)
    for no, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        if m := _OBJ_RE.match(line):
            typ = m.group(1)
            missing = [ref for ref, names in exports.items() if typ not in names]
            if typ not in QT_TYPES and missing:
                problems.append(Problem(name, no, f"type {typ} is not exported by gui-v2 "
                                                  f"{', '.join(missing)}"))
            stack.append(typ)
        else:
            m = _ASSIGN_RE.match(line)
            if m and stack and stack[-1] is not None and not _DECL_RE.match(line):
                prop = m.group(1).split(".", 1)[0]
                typ = stack[-1]
                if (typ in pinned["components"] and prop not in QT_NAMES
                        and prop not in _allowed(pinned, typ)):
                    problems.append(Problem(name, no, f"{typ}.{prop} is not in every "
                                                      "pinned gui-v2"))
            opens = line.count("{") - line.count("}")
            if opens > 0:
                stack.extend([None] * opens)
            elif opens < 0:
                del stack[len(stack) + opens:]
            for m in _CHAIN_RE.finditer(line):
                base, member = m.group(1), m.group(2)
                if base == "VenusOS":
                    if member not in pinned["enums"]["VenusOS"]:
                        problems.append(Problem(name, no, f"VenusOS.{member} is not pinned"))
                elif member not in _allowed(pinned, CHAINS[base]):
                    problems.append(Problem(name, no, f"{base}.{member} is not in every "
                                                      "pinned gui-v2"))
    return problems


def check_files(files: list[Path], pinned: dict[str, Any] | None = None) -> list[Problem]:
    """Problems of QML files."""
    pinned = pinned if pinned is not None else load_pinned()
    out: list[Problem] = []
    for f in files:
        out += check_text(f.read_text(encoding="utf-8"), f.name, pinned)
    return out
