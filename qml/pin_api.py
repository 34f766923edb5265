"""Pin the API of the Victron GUI components CanBridge's QML uses (developer tool).

Reads a git copy (a clone or a bare mirror) of ``victronenergy/gui-v2`` (and of
``victronenergy/veutil`` for ``VeQuickItem``) and writes ``qml/stubs/pinned_api.json``:

* ``gui-v2``: every ref read and the commit it resolved to (re-running against the same commits
  gives the same file);
* ``exports``: per ref, the types the ``Victron.VenusOS`` QML module exports there: the QML
  files and the C++ classes (``QML_ELEMENT``/``QML_NAMED_ELEMENT``) listed in
  ``cmake/ModuleVenus_Sources.cmake``, plus ``VeQuickItem`` when ``cmake/VeUtil_Sources.cmake``
  compiles veutil's ``ve_quick_item.hpp`` into the module. A plugin that names a type missing
  here fails to load on that gui-v2 ("... is not a type");
* ``components``: for each component CanBridge uses, the names of its properties, signals and
  functions, including inherited ones, **only the names present at every ref**.

The default refs are the oldest release with plugin support (v1.2.14), the newest release
checked (v1.3.15) and ``main`` (gui-v2's development branch, the next release): a component
deleted on ``main`` (as ``SettingsListNavigation`` was after v1.3.15) shows up before it ships.
The stub modules under ``qml/stubs/`` may only declare names from this file, and
``tests/qml`` checks every type and property the generated pages use against it.

No Victron code or text is copied: only identifiers are recorded.

Usage (after ``git clone --mirror https://github.com/victronenergy/gui-v2`` and veutil)::

    python -m qml.pin_api --gui-v2 /path/to/gui-v2.git --veutil /path/to/veutil.git \
        [--refs v1.2.14 v1.3.15 main]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PINNED_FILE = Path(__file__).resolve().parent / "stubs" / "pinned_api.json"

# gui-v2 QML/C++ components used by the generated pages (and so stubbed).
GUI_V2_COMPONENTS = [
    "Page", "DeviceListPluginPage", "GradientListView", "VisibleItemModel",
    "ListNavigation", "SettingsListHeader", "ListSpinBox", "ListSwitch",
    "ListRadioButtonGroup", "ListTextField", "ListText", "Global", "SystemSettings", "Device",
    "PageManager", "BackendConnection", "VenusPlatform",
]
DEFAULT_REFS = ["v1.2.14", "v1.3.15", "main"]
MODULE_SOURCES = "cmake/ModuleVenus_Sources.cmake"
VEUTIL_SOURCES = "cmake/VeUtil_Sources.cmake"
ENUM_NAMES = ["User_AccessType_User", "User_AccessType_Installer", "User_AccessType_SuperUser",
              "User_AccessType_Service", "InputValidation_Result_OK",
              "InputValidation_Result_Warning", "InputValidation_Result_Error"]
JS_LIBRARIES = {"Utils": "components/Utils.js"}

_PROP_RE = re.compile(
    r"^\s*(?:required\s+|readonly\s+|default\s+|final\s+)*property\s+"
    r"(?:alias|[\w.<>]+)\s+(\w+)"
)
_SIGNAL_RE = re.compile(r"^\s*signal\s+(\w+)")
_FUNC_RE = re.compile(r"^\s*function\s+(\w+)\s*\(")
_ROOT_RE = re.compile(r"^\s*([A-Z][\w.]*)\s*\{")
_QPROP_RE = re.compile(r"Q_PROPERTY\(\s*[\w:<>*\s]+?[\s*](\w+)\s+(?:READ|MEMBER)")
_QINVOKABLE_RE = re.compile(r"Q_INVOKABLE\s+[\w:<>*&\s]+?[\s*&](\w+)\s*\(")
_QSIGNALS_RE = re.compile(r"Q_SIGNALS:|signals:")
_CLASS_RE = r"class\s+(?:\w+\s+)?{name}\s*(?:final\s*)?:\s*public\s+([\w:]+)"
_QML_ELEMENT_RE = re.compile(
    r"class\s+(?:\w+\s+)?(\w+)\b[^;{]*\{(?:(?!\bclass\s).)*?\bQML_(?:ELEMENT|NAMED_ELEMENT\((\w+)\))",
    re.S)


@dataclass
class Api:
    """Names a component offers (its own and inherited)."""

    properties: set[str] = field(default_factory=set)
    signals: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    #: the Qt type(s) the inheritance chain ends in (QML name such as "ListView", or the C++
    #: class such as "QQuickItemDelegate"): their API comes from Qt, not from gui-v2
    qt_bases: set[str] = field(default_factory=set)

    def update(self, other: Api) -> None:
        self.properties |= other.properties
        self.signals |= other.signals
        self.functions |= other.functions
        self.qt_bases |= other.qt_bases

    def intersect(self, other: Api) -> Api:
        return Api(self.properties & other.properties, self.signals & other.signals,
                   self.functions & other.functions, self.qt_bases | other.qt_bases)


class GitTree:
    """Read-only access to one ref of a bare git repository."""

    def __init__(self, gitdir: Path, ref: str) -> None:
        self.gitdir = gitdir
        self.ref = ref
        self.files = self._git("ls-tree", "-r", "--name-only", ref).splitlines()
        self.commit = self._git("rev-parse", f"{ref}^{{commit}}").strip()

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.gitdir), *args], check=True,
                              capture_output=True, text=True).stdout

    def show(self, path: str) -> str:
        """The text of ``path`` at this ref."""
        return self._git("show", f"{self.ref}:{path}")

    def find_qml(self, name: str) -> str | None:
        """The path of ``<name>.qml`` (gui-v2 has unique component names)."""
        for f in self.files:
            if f.endswith(f"/{name}.qml") or f == f"{name}.qml":
                return f
        return None

    def find_class(self, name: str) -> tuple[str, str | None] | None:
        """(header path, base class) of the C++ class ``name``."""
        pattern = re.compile(_CLASS_RE.format(name=re.escape(name)))
        for f in self.files:
            if f.endswith((".h", ".hpp")) and "/qzxing/" not in f:
                text = self.show(f)
                m = pattern.search(text)
                if m:
                    return f, m.group(1).split("::")[-1]
        return None


def _top_level_lines(text: str) -> tuple[str | None, list[str]]:
    """The root type of a QML document and its lines at brace depth 1."""
    root = None
    depth = 0
    lines: list[str] = []
    in_comment = False
    for raw in text.splitlines():
        line = raw
        if in_comment:
            if "*/" not in line:
                continue
            line = line.split("*/", 1)[1]
            in_comment = False
        line = re.sub(r"/\*.*?\*/", "", line)
        if "/*" in line:
            line, in_comment = line.split("/*", 1)[0], True
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
        line = re.sub(r"'(?:\\.|[^'\\])*'", "''", line)
        line = line.split("//", 1)[0]
        if depth == 0 and root is None:
            m = _ROOT_RE.match(line)
            if m:
                root = m.group(1)
        elif depth == 1:
            lines.append(line)
        depth += line.count("{") - line.count("}")
    return root, lines


def qml_api(text: str) -> tuple[str | None, Api]:
    """The root type and the top-level declarations of one QML document."""
    root, lines = _top_level_lines(text)
    api = Api()
    for line in lines:
        if m := _PROP_RE.match(line):
            api.properties.add(m.group(1))
        elif m := _SIGNAL_RE.match(line):
            api.signals.add(m.group(1))
        elif m := _FUNC_RE.match(line):
            api.functions.add(m.group(1))
    return root, api


def cpp_api(text: str) -> Api:
    """Q_PROPERTY, Q_INVOKABLE and signal names declared in a C++ header."""
    api = Api(set(_QPROP_RE.findall(text)), set(), set(_QINVOKABLE_RE.findall(text)))
    for tail in _QSIGNALS_RE.split(text)[1:]:
        block = re.split(r"\b(?:public|private|protected)\b.*?:", tail, maxsplit=1)[0]
        api.signals |= set(re.findall(r"void\s+(\w+)\s*\(", block))
    return api


def component_api(tree: GitTree, name: str, seen: set[str] | None = None) -> Api:
    """The API of ``name`` at one ref, following its base types inside the repository."""
    seen = set() if seen is None else seen
    if name in seen:
        return Api()
    seen.add(name)
    path = tree.find_qml(name)
    if path is not None:
        root, api = qml_api(tree.show(path))
        if root is not None:
            api.update(component_api(tree, root.split(".")[-1], seen))
        return api
    found = tree.find_class(name)
    if found is None:
        return Api(qt_bases={name})  # a Qt type: its API comes from Qt itself
    header, base = found
    api = cpp_api(tree.show(header))
    if base:
        api.update(component_api(tree, base, seen))
    return api


def exported_types(tree: GitTree) -> set[str]:
    """The type names the Victron.VenusOS module exports at one ref (see the module doc)."""
    sources = re.findall(r"^\s*([\w./+-]+\.(?:qml|h|js))\s*$", tree.show(MODULE_SOURCES), re.M)
    types: set[str] = set()
    for src in sources:
        if src.endswith((".qml", ".js")):
            # qt_add_qml_module lists QML and JS files in the qmldir under their base name
            types.add(src.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        elif src.endswith(".h") and src in tree.files:
            for cls, named in _QML_ELEMENT_RE.findall(tree.show(src)):
                types.add(named or cls)
    if VEUTIL_SOURCES in tree.files and "ve_quick_item.hpp" in tree.show(VEUTIL_SOURCES):
        types.add("VeQuickItem")
    return types


def pin(gui_v2: Path, veutil: Path, refs: list[str], veutil_ref: str = "HEAD") -> dict:
    """Build the pinned API document."""
    trees = [GitTree(gui_v2, r) for r in refs]
    exports = {t.ref: exported_types(t) for t in trees}
    components: dict[str, dict[str, list[str]]] = {}
    for name in GUI_V2_COMPONENTS:
        missing = [t.ref for t in trees if name not in exports[t.ref]]
        if missing:
            raise SystemExit(f"{name} is not exported by gui-v2 {', '.join(missing)}: "
                             "CanBridge's pages must not use it")
        common: Api | None = None
        for tree in trees:
            if tree.find_qml(name) is None and tree.find_class(name) is None:
                raise SystemExit(f"{name} not found in gui-v2 {tree.ref}")
            api = component_api(tree, name)
            common = api if common is None else common.intersect(api)
        assert common is not None
        components[name] = {"properties": sorted(common.properties),
                            "signals": sorted(common.signals),
                            "functions": sorted(common.functions),
                            "qt_bases": sorted(common.qt_bases)}
    for name, path in JS_LIBRARIES.items():
        common_funcs: set[str] | None = None
        for tree in trees:
            funcs = set(re.findall(r"^function\s+(\w+)\s*\(", tree.show(path), re.M))
            common_funcs = funcs if common_funcs is None else common_funcs & funcs
        components[name] = {"properties": [], "signals": [],
                            "functions": sorted(common_funcs or ())}
    vtree = GitTree(veutil, veutil_ref)
    header = next(f for f in vtree.files if f.endswith("ve_quick_item.hpp"))
    vapi = cpp_api(vtree.show(header))
    components["VeQuickItem"] = {"properties": sorted(vapi.properties),
                                 "signals": sorted(vapi.signals),
                                 "functions": sorted(vapi.functions)}
    for tree in trees:
        text = tree.show("src/enums.h")
        missing = [e for e in ENUM_NAMES if e not in text]
        if missing:
            raise SystemExit(f"enum values {missing} not in gui-v2 {tree.ref}")
    enums = list(ENUM_NAMES)
    return {
        "about": "Names only (no code) of the Victron GUI API CanBridge's QML may use: the "
                 "types each gui-v2 ref exports, and the component API common to all of "
                 "them. Regenerate with python -m qml.pin_api (see its docstring).",
        "gui-v2": {t.ref: t.commit for t in trees},
        "veutil": vtree.commit,
        "exports": {ref: sorted(names) for ref, names in exports.items()},
        "components": components,
        "enums": {"VenusOS": enums},
    }


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gui-v2", type=Path, required=True)
    ap.add_argument("--veutil", type=Path, required=True)
    ap.add_argument("--refs", nargs="+", default=DEFAULT_REFS)
    ap.add_argument("--out", type=Path, default=PINNED_FILE)
    args = ap.parse_args(argv)
    doc = pin(args.gui_v2, args.veutil, args.refs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
