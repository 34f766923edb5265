"""CanBridge's Remote Console pages: built from the schema, linted, rendered and round-tripped.

* the build (``qml.build``) runs into a temporary directory once per module;
* ``qmllint`` (PySide6 6.8, the Qt of Venus OS) must report nothing, against stub modules whose
  names are checked against ``qml/stubs/pinned_api.json`` (pinned from real gui-v2 releases);
* every gui-v2 page is loaded from the packed plugin resource (``qrc:/CanBridge/...``) and
  rendered offscreen; screenshots go to ``artifacts/qml/``;
* a round trip through the settings service on a private D-Bus.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driver.schema import SCHEMA_FILE, Schema, Setting, load_schema
from qml import build as qbuild
from qml.pin_api import qml_api
from tests.qml import qtkit
from tests.qml.qtkit import CLASSIC_STUBS, HARNESS, STUBS, V2_IMPORTS, page_view, process
from tests.qml.stubdata import DbusStore, MemoryStore, StubBackend

SETTINGS = "com.victronenergy.settings"
PATH_RE = re.compile(r'"(?:com\.victronenergy\.settings)?(/Settings/CanBridge/[^"]+)"')


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, schema: Schema) -> qbuild.BuildResult:
    return qbuild.build(tmp_path_factory.mktemp("qml"), schema)


@pytest.fixture(scope="module")
def plugin(built: qbuild.BuildResult,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    doc, rcc = qtkit.register_plugin(built.plugin_json, tmp_path_factory.mktemp("rcc"))
    try:
        yield doc
    finally:
        qtkit.unregister(rcc)


def qmllint(files: list[Path], imports: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "pyside6-qmllint"
    if not exe.exists():
        pytest.fail("pyside6-qmllint missing: install PySide6-Essentials==6.8.3 (make deps)")
    return subprocess.run([str(exe), "--max-warnings", "0", "-I", str(imports),
                           *map(str, files)], check=False, capture_output=True, text=True,
                          timeout=120)


def classic_dir(built: qbuild.BuildResult, tmp: Path) -> Path:
    """The classic pages next to the classic stubs, as they sit in /opt/victronenergy/gui/qml."""
    d = tmp / "gui-qml"
    d.mkdir()
    for f in [*built.classic_dir.glob("*.qml"), *CLASSIC_STUBS.glob("*.qml")]:
        shutil.copy(f, d / f.name)
    return d


# --------------------------------------------------------------------------- the package


def test_plugin_json_is_what_gui_v2_reads(built: qbuild.BuildResult,
                                          plugin: dict[str, Any]) -> None:
    from PySide6.QtCore import QFile

    doc = json.loads(built.plugin_json.read_text(encoding="utf-8"))
    assert built.plugin_json.name == f"{doc['name']}.json"
    assert built.plugin_json.parent.name == "gui-v2"
    assert doc["name"] == "CanBridge"
    assert isinstance(doc["version"], str) and doc["version"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", doc["minRequiredVersion"])
    raw = base64.b64decode(doc["resource"], validate=True)
    assert raw[:4] == b"qres", "not a binary Qt resource"
    # kept small: over MQTT plugins travel in 4 KiB chunks with a 15 s timeout
    assert built.plugin_json.stat().st_size < 64 * 1024
    types = sorted(i["type"] for i in doc["integrations"])
    assert types == [1, 2]
    for integ in doc["integrations"]:
        assert integ["url"].startswith(f"qrc:/{doc['name']}/")
        assert QFile(":" + integ["url"][len("qrc:"):]).exists(), integ["url"]
        if integ["type"] == 2:
            assert re.fullmatch(r"0x[1-9A-F][0-9A-F]*", integ["productId"])
            assert int(integ["productId"], 16) == 0xBA77
            assert integ["title"]
    # every QML file of the plugin is in the resource under /CanBridge
    for f in built.gui_v2_dir.glob("*.qml"):
        res = QFile(f":/CanBridge/{f.name}")
        assert res.open(QFile.OpenModeFlag.ReadOnly), f.name
        assert bytes(res.readAll().data()).decode() == f.read_text(encoding="utf-8")
        res.close()


def _paths_in(files: list[Path]) -> list[str]:
    return [p for f in files for p in PATH_RE.findall(f.read_text(encoding="utf-8"))]


def test_every_setting_is_on_the_pages_once_and_nothing_else(
        built: qbuild.BuildResult, schema: Schema) -> None:
    wanted = sorted(s.path for s in schema)
    v2 = _paths_in([f for f in built.gui_v2_dir.glob("Page*.qml")])
    classic = _paths_in(list(built.classic_dir.glob("PageCanBridge*.qml")))
    assert sorted(v2) == wanted
    assert sorted(classic) == wanted
    # no page names a setting outside the schema (device page included)
    assert set(_paths_in(list(built.gui_v2_dir.glob("*.qml")))) <= set(wanted)


def test_a_setting_added_to_the_schema_appears_on_the_pages(tmp_path: Path) -> None:
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    data["groups"].append({"id": "extra_group", "label": "Extra", "help": "Added by a test."})
    data["settings"].append({
        "path": "/Settings/CanBridge/General/TestAdded", "type": "f", "default": 1.5,
        "min": 0, "max": 9, "group": "extra_group", "widget": "number", "label": "Added",
        "help": "A setting added by a test.", "unit": "V", "step": 0.5, "decimals": 1})
    (tmp_path / "schema.json").write_text(json.dumps(data), encoding="utf-8")
    from driver.schema import load_schema as load

    res = qbuild.build(tmp_path / "out", load(tmp_path / "schema.json"), version="9.9.9")
    page = (res.gui_v2_dir / "PageExtraGroup.qml").read_text(encoding="utf-8")
    assert '"/Settings/CanBridge/General/TestAdded"' in page
    assert "stepSize: 0.5" in page and "decimals: 1" in page and 'suffix: "V"' in page
    assert "PageExtraGroup.qml" in (res.gui_v2_dir / "CanBridgeSettings.qml").read_text()
    classic = (res.classic_dir / "PageCanBridgeExtraGroup.qml").read_text(encoding="utf-8")
    assert "General/TestAdded" in classic
    assert "PageCanBridgeExtraGroup" in (res.classic_dir / "PageSettingsCanBridge.qml").read_text()


def test_an_unknown_widget_fails_the_build(schema: Schema) -> None:
    bad = Setting(path="/Settings/CanBridge/X", type="i", default=0, group="general",
                  widget="dial", label="X", help="", min=0, max=1)
    with pytest.raises(qbuild.BuildError, match="dial"):
        qbuild.v2_item(bad)
    with pytest.raises(qbuild.BuildError, match="dial"):
        qbuild.classic_item(bad)


def test_classic_snippet_opens_the_classic_menu_page(built: qbuild.BuildResult) -> None:
    snippet = (built.classic_dir / qbuild.CLASSIC_SNIPPET).read_text(encoding="utf-8")
    assert "MbSubMenu {" in snippet
    assert f"{qbuild.CLASSIC_MENU_PAGE} {{}}" in snippet
    assert (built.classic_dir / f"{qbuild.CLASSIC_MENU_PAGE}.qml").exists()


# --------------------------------------------------------------------------- lint and stubs


def test_qmllint_gui_v2_pages_clean(built: qbuild.BuildResult) -> None:
    files = sorted(built.gui_v2_dir.glob("*.qml"))
    proc = qmllint(files + sorted((V2_IMPORTS / "Victron" / "VenusOS").glob("*.qml")),
                   V2_IMPORTS)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr)


def test_qmllint_classic_pages_clean(built: qbuild.BuildResult, tmp_path: Path) -> None:
    d = classic_dir(built, tmp_path)
    files = sorted(f for f in d.glob("*.qml") if f.stem != "ClassicHarness")  # test harness
    proc = qmllint(files, CLASSIC_STUBS)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr)


def test_qmllint_catches_api_the_components_do_not_have(tmp_path: Path) -> None:
    bad = tmp_path / "Bad.qml"
    bad.write_text("import QtQuick\nimport Victron.VenusOS\nPage {\n"
                   "\tListSpinBox { maximumValue: 3 }\n}\n", encoding="utf-8")
    proc = qmllint([bad], V2_IMPORTS)
    assert proc.returncode != 0
    assert "maximumValue" in proc.stdout + proc.stderr


def _qmldir_types(qmldir: Path) -> dict[str, str]:
    types = {}
    for line in qmldir.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] not in ("module", "internal", "singleton"):
            types[parts[0]] = parts[2]
        elif len(parts) == 4 and parts[0] == "singleton":
            types[parts[1]] = parts[3]
    return types


def _declared(path: Path, stub_dir: Path) -> set[str]:
    """Names declared by a stub file and by the stub-internal files it derives from."""
    root, api = qml_api(path.read_text(encoding="utf-8"))
    names = api.properties | api.signals | api.functions
    if root and root.startswith("Stub") and (stub_dir / f"{root}.qml").exists():
        names |= _declared(stub_dir / f"{root}.qml", stub_dir)
    return names


def _check_stubs(stub_dir: Path, types: dict[str, str], pinned: dict[str, Any]) -> list[str]:
    problems = []
    for name, file in types.items():
        if name.startswith("Stub"):
            continue
        if name not in pinned:
            problems.append(f"{name}: stubbed but not in the pinned API")
            continue
        allowed = set().union(*(set(pinned[name][k]) for k in ("properties", "signals",
                                                              "functions")))
        if file.endswith(".js"):
            declared = set(re.findall(r"^function\s+(\w+)", (stub_dir / file).read_text(),
                                      re.M))
        else:
            declared = _declared(stub_dir / file, stub_dir)
        invented = {n for n in declared - allowed if not n.startswith("_stub")}
        if invented:
            problems.append(f"{name}: {sorted(invented)} not in the pinned API")
    return problems


def test_gui_v2_stubs_use_only_pinned_names() -> None:
    pinned = json.loads((STUBS / "pinned_api.json").read_text(encoding="utf-8"))
    stub_dir = V2_IMPORTS / "Victron" / "VenusOS"
    types = _qmldir_types(stub_dir / "qmldir")
    assert {"ListSpinBox", "Page", "VeQuickItem", "Global"} <= set(types)
    problems = _check_stubs(stub_dir, {k: v for k, v in types.items() if k != "VenusOS"},
                            pinned["components"])
    enums = set(re.findall(r"\b(\w+_\w+)\s*=", (stub_dir / "VenusOS.qml").read_text()))
    problems += [f"VenusOS.{e} not pinned" for e in enums - set(pinned["enums"]["VenusOS"])]
    assert not problems, problems


def test_classic_stubs_use_only_pinned_names() -> None:
    pinned = json.loads((STUBS / "pinned_classic_api.json").read_text(encoding="utf-8"))
    types = {p.stem: p.name for p in CLASSIC_STUBS.glob("*.qml") if p.stem != "ClassicHarness"}
    velib = CLASSIC_STUBS / "com" / "victron" / "velib"
    problems = _check_stubs(CLASSIC_STUBS, types, pinned["components"])
    problems += _check_stubs(velib, _qmldir_types(velib / "qmldir"), pinned["components"])
    assert not problems, problems


def test_the_stub_check_notices_an_invented_name(tmp_path: Path) -> None:
    (tmp_path / "ListSpinBox.qml").write_text(
        "import QtQuick\nItem {\n\tproperty real maximumValue\n}\n", encoding="utf-8")
    pinned = {"ListSpinBox": {"properties": ["from", "to"], "signals": [], "functions": []}}
    problems = _check_stubs(tmp_path, {"ListSpinBox": "ListSpinBox.qml"}, pinned)
    assert problems and "maximumValue" in problems[0]


# --------------------------------------------------------------------------- pinned gui-v2 API


def _pinned() -> dict[str, Any]:
    return json.loads((STUBS / "pinned_api.json").read_text(encoding="utf-8"))


def test_pinned_api_covers_first_plugin_release_newest_release_and_main() -> None:
    pinned = _pinned()
    assert list(pinned["gui-v2"]) == ["v1.2.14", "v1.3.15", "main"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", c) for c in pinned["gui-v2"].values())
    assert set(pinned["exports"]) == set(pinned["gui-v2"])
    # what gui-v2's sources say (checked by hand in cmake/ModuleVenus_Sources.cmake): the
    # component existed in both releases and was deleted on main (commit cc14e21b)
    exports = pinned["exports"]
    assert "SettingsListNavigation" in exports["v1.2.14"]
    assert "SettingsListNavigation" in exports["v1.3.15"]
    assert "SettingsListNavigation" not in exports["main"]
    assert all("ListNavigation" in names for names in exports.values())
    assert qbuild.MIN_GUI_V2 == "v1.2.14"


def test_pages_use_only_api_of_every_pinned_gui_v2(built: qbuild.BuildResult) -> None:
    """Issue 15: the pages used SettingsListNavigation, which gui-v2 main no longer exports."""
    from qml.api_check import check_files

    files = sorted(built.gui_v2_dir.glob("*.qml"))
    assert len(files) >= 3
    problems = check_files(files)
    assert not problems, "\n".join(map(str, problems))


def test_api_check_finds_a_type_deleted_on_main() -> None:
    from qml.api_check import check_text

    old_nav = ("import QtQuick\nimport Victron.VenusOS\n\nPage {\n\tGradientListView {\n"
               "\t\tmodel: VisibleItemModel {\n\t\t\tSettingsListNavigation {\n"
               "\t\t\t\ttext: \"x\"\n\t\t\t\tpageSource: \"qrc:/X/P.qml\"\n"
               "\t\t\t}\n\t\t}\n\t}\n}\n")
    problems = [str(p) for p in check_text(old_nav, "Old.qml", _pinned())]
    assert problems == ["Old.qml:7: type SettingsListNavigation is not exported by gui-v2 main"]


def test_api_check_finds_properties_and_members_not_everywhere() -> None:
    from qml.api_check import check_text

    text = ("ListNavigation {\n\tpageSource: \"x\"\n\tonClicked: Global.pageManager.pushIt(1)\n"
            "\tcaption: VenusOS.No_Such_Enum\n}\nListSpinBox {\n\tmaximumValue: 3\n"
            "\tdataItem.uid: BackendConnection.serviceUidFromName(\"a\", 0)\n}\n")
    problems = [p.what for p in check_text(text, "X.qml", _pinned())]
    assert problems == ["ListNavigation.pageSource is not in every pinned gui-v2",
                        "Global.pageManager.pushIt is not in every pinned gui-v2",
                        "VenusOS.No_Such_Enum is not pinned",
                        "ListSpinBox.maximumValue is not in every pinned gui-v2"]


def test_qt_names_allowed_by_the_check_exist_in_qt() -> None:
    """The few Qt-inherited names the check accepts are real properties of those Qt types."""
    from PySide6.QtQml import QQmlComponent, QQmlEngine

    from qml.api_check import QT_BASE_NAMES, QT_BASE_QML

    qtkit.app()
    engine = QQmlEngine()
    for base, names in QT_BASE_NAMES.items():
        comp = QQmlComponent(engine)
        comp.setData(f"import QtQuick\nimport QtQuick.Templates as T\n{QT_BASE_QML[base]} {{}}\n"
                     .encode(), "file:///qtbase.qml")
        obj = comp.create()
        assert obj is not None, comp.errorString()
        meta = obj.metaObject()
        have = {meta.property(i).name() for i in range(meta.propertyCount())}
        assert names <= have, (base, names - have)


def test_stubs_offer_no_type_that_gui_v2_main_does_not_export() -> None:
    exports = _pinned()["exports"]
    types = _qmldir_types(V2_IMPORTS / "Victron" / "VenusOS" / "qmldir")
    for name in types:
        if name.startswith("Stub") or name == "VenusOS":
            continue  # stub internals; VenusOS is gui-v2's C++ enum type (src/enums.h)
        missing = [ref for ref, names in exports.items() if name not in names]
        assert not missing, f"stub {name} is not exported by gui-v2 {missing}"


# --------------------------------------------------------------------------- rendering


def _write(obj: Any, name: str, value: Any) -> None:
    """Write a (dotted) QML property; PySide6 cannot hand out QML-defined object types."""
    from PySide6.QtQml import QQmlProperty

    if not QQmlProperty.write(obj, name, value):
        pytest.fail(f"cannot write {name}")


def _read(obj: Any, name: str) -> Any:
    """Read a (dotted) QML property."""
    from PySide6.QtQml import QQmlProperty

    return QQmlProperty.read(obj, name)


def _memory_store(schema: Schema, prefix_service: str = SETTINGS) -> MemoryStore:
    values = {(prefix_service, s.path): s.dbus_default() for s in schema}
    limits = {(prefix_service, s.path): (float(s.dbus_min()), float(s.dbus_max()))
              for s in schema if s.type != "s"}
    return MemoryStore(values, limits)


def _check_item(item: Any, setting: Setting, service_uid: str) -> None:
    """The page item of ``setting`` carries the schema's attributes and binds its path."""
    assert _read(item, "dataItem.uid") == service_uid + setting.path
    assert item.property("text") == setting.label
    if setting.widget == "number":
        assert item.property("from") == pytest.approx(setting.min)
        assert item.property("to") == pytest.approx(setting.max)
        assert item.property("stepSize") == pytest.approx(qbuild.step_of(setting))
        assert item.property("decimals") == qbuild.decimals_of(setting)
        assert item.property("suffix") == setting.unit
        assert item.property("value") == pytest.approx(float(setting.default))
    elif setting.widget == "option":
        model = item.property("optionModel")
        model = model.toVariant() if hasattr(model, "toVariant") else model
        assert [(o["display"], o["value"]) for o in model] == [
            (o.label, o.value) for o in setting.options]
        labels = {o.value: o.label for o in setting.options}
        assert item.property("_stubValueText") == labels[setting.default]
    elif setting.widget == "switch":
        assert item.property("checked") == bool(setting.default)
    else:
        assert item.property("secondaryText") == str(setting.default)


def test_gui_v2_pages_render_from_the_resource(plugin: dict[str, Any], schema: Schema) -> None:
    from PySide6.QtCore import QMetaObject
    from PySide6.QtQuick import QQuickItem

    store = _memory_store(schema)
    backend = StubBackend(store)
    shots = []
    with page_view(HARNESS, [V2_IMPORTS]) as pv:
        glob = pv.singleton("Victron.VenusOS", "Global")
        glob.setProperty("_stubBackend", backend)
        service_uid = "mock/" + SETTINGS
        _write(glob, "systemSettings.serviceUid", service_uid)
        pv.start(800, 480)
        settings_url = next(i["url"] for i in plugin["integrations"] if i["type"] == 1)
        page = pv.load(settings_url)
        pv.fit_height(page, 48)
        shots.append(pv.grab("gui-v2-settings"))
        for group in schema.groups:
            if not schema.in_group(group.id):
                continue
            nav = page.findChild(QQuickItem, f"nav_{group.id}")
            assert nav is not None, group.id
            assert nav.property("text") == group.label
            assert nav.property("height") > 0
            # a tap runs the page's own onClicked: Global.pageManager.pushPage(url, {title})
            QMetaObject.invokeMethod(nav, "_stubTap")
            manager = _read(glob, "pageManager")
            sub_url = manager.property("_stubLastUrl")
            assert sub_url == f"qrc:/CanBridge/{qbuild.group_page(group)}"
            pushed = manager.property("_stubLastProperties")
            pushed = pushed.toVariant() if hasattr(pushed, "toVariant") else pushed
            assert pushed == {"title": group.label}
            sub = pv.load(sub_url)
            assert pv.warnings == [], pv.warnings
            assert sub.property("title") == group.label
            for setting in schema.in_group(group.id):
                item = sub.findChild(QQuickItem, qbuild.object_name(setting))
                assert item is not None, setting.path
                _check_item(item, setting, service_uid)
            pv.fit_height(sub, 48)
            shots.append(pv.grab(f"gui-v2-{group.id}"))
            page = pv.load(settings_url)
        for shot in shots:
            assert shot.stat().st_size > 5000, f"{shot} looks empty"


@pytest.mark.parametrize("as_json", [False, True])
def test_gui_v2_offers_the_gx_can_ports_as_a_choice(plugin: dict[str, Any], schema: Schema,
                                                    as_json: bool) -> None:
    """Issue 15: the ports come from Venus's own list (venus-platform /CanBus/Interfaces, as on
    a Cerbo GX MK1), choosing one writes the CanInterface setting, the driver's error shows."""
    from PySide6.QtCore import Q_ARG, QMetaObject
    from PySide6.QtQuick import QQuickItem

    store = _memory_store(schema)
    found = [{"config": 0, "interface": "can0", "name": "VE.Can port"},
             {"config": 1, "interface": "can1", "name": "BMS-Can port"}]
    store.values[("com.victronenergy.platform", "/CanBus/Interfaces")] = (
        json.dumps(found) if as_json else found)
    store.values[("com.victronenergy.canbridge.superb", "/Status/CanError")] = (
        "CAN interface 'vecan0' does not exist on this GX")
    backend = StubBackend(store)
    superb = next(g for g in schema.groups if g.id == "superb")
    setting = schema.by_key["Superb/CanInterface"]
    with page_view(HARNESS, [V2_IMPORTS]) as pv:
        pv.singleton("Victron.VenusOS", "Global").setProperty("_stubBackend", backend)
        pv.start(800, 480)
        page = pv.load(f"qrc:/CanBridge/{qbuild.group_page(superb)}")
        assert pv.warnings == [], pv.warnings
        choice = page.findChild(QQuickItem, "ports_Superb_CanInterface")
        model = choice.property("optionModel")
        model = model.toVariant() if hasattr(model, "toVariant") else model
        assert [(o["display"], o["value"]) for o in model] == [
            ("auto: this GX's VE.Can port", "auto"), ("can0 (VE.Can port)", "can0"),
            ("can1 (BMS-Can port), BMS only", "can1")]
        assert choice.property("currentIndex") == 0  # the default, auto
        QMetaObject.invokeMethod(choice, "_stubChoose", Q_ARG("QVariant", 1))
        process(0.1)
        assert store.read((SETTINGS, setting.path)) == "can0"
        assert choice.property("currentIndex") == 1
        error = page.findChild(QQuickItem, "error_Superb_CanInterface")
        assert bool(error.property("visible"))
        assert "'vecan0' does not exist" in error.property("secondaryText")
        pv.fit_height(page, 48)
        pv.grab("gui-v2-can-ports")


def test_gui_v2_sma_page_says_when_the_port_does_not_exist(plugin: dict[str, Any],
                                                           schema: Schema) -> None:
    """The Sunny Island page checks the configured port against Venus's list (Cerbo GX MK1)."""
    from PySide6.QtQuick import QQuickItem

    store = _memory_store(schema)
    store.values[("com.victronenergy.platform", "/CanBus/Interfaces")] = [
        {"config": 0, "interface": "can0", "name": "VE.Can port"},
        {"config": 1, "interface": "can1", "name": "BMS-Can port"}]
    setting = schema.by_key["Sma/CanInterface"]
    backend = StubBackend(store)
    sma = next(g for g in schema.groups if g.id == setting.group)
    with page_view(HARNESS, [V2_IMPORTS]) as pv:
        pv.singleton("Victron.VenusOS", "Global").setProperty("_stubBackend", backend)
        pv.start(800, 480)
        page = pv.load(f"qrc:/CanBridge/{qbuild.group_page(sma)}")
        assert pv.warnings == [], pv.warnings
        error = page.findChild(QQuickItem, "error_Sma_CanInterface")
        assert not bool(error.property("visible"))  # auto
        for value, shown in (("vecan1", "CAN interface vecan1 does not exist on this GX"),
                             ("can1", ""), ("slcan:/dev/ttyACM0", "")):
            backend.changed((SETTINGS, setting.path), value)
            process(0.05)
            assert error.property("secondaryText") == shown, value
            assert bool(error.property("visible")) is bool(shown)


@pytest.mark.parametrize(("process_name", "ours"), [
    ("/data/apps/available/canbridge/dbus-superb", True),
    ("dbus-superb.py", True),
    ("dbus-serialbattery.py", False),
    (None, False),
])
def test_device_page_offers_settings_only_for_our_batteries(
        plugin: dict[str, Any], schema: Schema, process_name: str | None, ours: bool) -> None:
    from PySide6.QtQuick import QQuickItem

    service = "com.victronenergy.battery.socketcan_vecan0_1"
    store = _memory_store(schema)
    if process_name is not None:
        store.values[(service, "/Mgmt/ProcessName")] = process_name
    backend = StubBackend(store)
    with page_view(HARNESS, [V2_IMPORTS]) as pv:
        pv.singleton("Victron.VenusOS", "Global").setProperty("_stubBackend", backend)
        root = pv.start(800, 480)
        _write(root, "device.serviceUid", f"mock/{service}")
        _write(root, "device.productId", 0xBA77)
        url = next(i["url"] for i in plugin["integrations"] if i["type"] == 2)
        page = pv.load(url, with_device=True)
        assert pv.warnings == [], pv.warnings
        process(0.1)
        assert page.property("ours") is ours
        navs = [page.findChild(QQuickItem, f"nav_{g.id}") for g in qbuild.device_groups(schema)]
        assert navs and all(n is not None for n in navs)
        assert all(bool(n.property("visible")) is ours for n in navs)
        assert bool(page.findChild(QQuickItem, "notOurs").property("visible")) is not ours
        if process_name is not None and process_name.endswith("dbus-superb"):
            pv.fit_height(page, 48)
            pv.grab("gui-v2-device-ours")
        if process_name == "dbus-serialbattery.py":
            pv.grab("gui-v2-device-not-ours")


def test_classic_pages_render(built: qbuild.BuildResult, schema: Schema,
                              tmp_path: Path) -> None:
    from PySide6.QtCore import QUrl

    d = classic_dir(built, tmp_path)
    store = _memory_store(schema)
    # systemcalc names the vebus service in use; the "in use" rows read dbus-sma's paths there
    store.values[("com.victronenergy.system", "/VebusService")] = \
        "com.victronenergy.vebus.canbridge_sma_can1"
    backend = StubBackend(store)
    with page_view(d / "ClassicHarness.qml", [CLASSIC_STUBS]) as pv:
        pv.singleton("com.victron.velib", "StubBus").setProperty("_stubBackend", backend)
        pv.start(480, 272)
        for f in sorted(d.glob("Page*CanBridge*.qml")):
            page = pv.load(QUrl.fromLocalFile(str(f)).toString())
            assert pv.warnings == [], (f.name, pv.warnings)
            if f.stem in ("PageSettingsCanBridge", "PageCanBridgeSuperbLimits"):
                pv.fit_height(page, 32)
                pv.grab(f"classic-{f.stem}")
    bound = {k[1] for k in store.values if k[1].startswith("/Settings/")}
    # and Venus's list of CAN interfaces, which labels the CAN port choice
    bound.add("/CanBus/Interfaces")
    attached = {k[1] for k in backend.items
                if k[1].startswith("/Settings/") or k[1] == "/CanBus/Interfaces"}
    assert attached == bound, sorted(bound ^ attached)
    # plus the read-only "in use" rows of dbus-sma's battery and SoC source
    assert {k for k in backend.items if k[1] not in attached} == {
        ("com.victronenergy.system", "/VebusService"),
        ("com.victronenergy.vebus.canbridge_sma_can1", "/CanBridge/BatterySource"),
        ("com.victronenergy.vebus.canbridge_sma_can1", "/CanBridge/SocSource"),
        # and the drivers' last refused setting (issue 14)
        ("com.victronenergy.vebus.canbridge_sma_can1", "/CanBridge/LastRefusal"),
        ("com.victronenergy.canbridge.superb", "/CanBridge/LastRefusal")}


def test_classic_pages_offer_the_can_ports_labelled_from_the_gx(
        built: qbuild.BuildResult, schema: Schema, tmp_path: Path) -> None:
    """Issue 15: the classic page offers a choice of ports, each labelled from Venus's list of
    this GX's interfaces (here a Cerbo GX MK1), and writes the CanInterface setting."""
    from PySide6.QtCore import QUrl
    from PySide6.QtQuick import QQuickItem

    d = classic_dir(built, tmp_path)
    store = _memory_store(schema)
    store.values[("com.victronenergy.platform", "/CanBus/Interfaces")] = json.dumps(
        [{"config": 1, "interface": "can1", "name": "BMS-Can port"},
         {"config": 0, "interface": "can0", "name": "VE.Can port"}])
    backend = StubBackend(store)
    superb = next(g for g in schema.groups if g.id == "superb")
    with page_view(d / "ClassicHarness.qml", [CLASSIC_STUBS]) as pv:
        pv.singleton("com.victron.velib", "StubBus").setProperty("_stubBackend", backend)
        pv.start(480, 272)
        page = pv.load(QUrl.fromLocalFile(str(d / f"{qbuild.classic_page(superb)}.qml"))
                       .toString())
        assert pv.warnings == [], pv.warnings
        options = [o for o in page.findChildren(QQuickItem) if o.property("_stubLabel") ==
                   "CAN port"]
        assert len(options) == 1
        values = _read(options[0], "possibleValues")
        texts = [str(values.at(i).property("description")) for i in range(values.count())]
        assert texts == ["auto: this GX's VE.Can port", "can0 (VE.Can port)",
                         "can1 (BMS-Can port), BMS only", "vecan0 (not on this GX)",
                         "vecan1 (not on this GX)"]
        assert options[0].property("_stubValueText") == "auto: this GX's VE.Can port"
        pv.fit_height(page, 32)
        pv.grab("classic-can-ports")


# --------------------------------------------------------------------------- round trip


def _register_schema(bus: Any, schema: Schema) -> None:
    import dbus

    entries = [dbus.Dictionary({"path": s.path, "default": _wire(s.dbus_default()),
                                "min": _wire(s.dbus_min()), "max": _wire(s.dbus_max())},
                               signature="sv") for s in schema]
    root = dbus.Interface(bus.get_object(SETTINGS, "/", introspect=False),
                          "com.victronenergy.Settings")
    results = root.AddSettings(dbus.Array(entries, signature="a{sv}"))
    errors = [(str(r.get("path")), int(r["error"])) for r in results if int(r["error"]) != 0]
    assert not errors, errors


def _wire(value: Any) -> Any:
    import dbus

    if isinstance(value, str):
        return dbus.String(value)
    if isinstance(value, int):
        return dbus.Int32(value)
    return dbus.Double(value)


def test_round_trip_through_the_settings_service(plugin: dict[str, Any], schema: Schema,
                                                 settings_service: Any) -> None:
    import dbus
    import dbus.mainloop.glib
    from gi.repository import GLib
    from PySide6.QtCore import Q_ARG, QMetaObject
    from PySide6.QtQuick import QQuickItem

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(settings_service.daemon.address)
    _register_schema(bus, schema)
    store = DbusStore(bus)
    backend = StubBackend(store)

    def on_change(changes: dict[str, Any], path: str | None = None) -> None:
        if path is not None and "Value" in changes:
            backend.changed((SETTINGS, path), changes["Value"])

    bus.add_signal_receiver(on_change, signal_name="PropertiesChanged",
                            dbus_interface="com.victronenergy.BusItem", bus_name=SETTINGS,
                            path_keyword="path")
    ctx = GLib.MainContext.default()

    def wait(cond: Any, seconds: float = 5.0) -> bool:
        def step() -> bool:
            while ctx.iteration(False):
                pass
            return bool(cond())
        return process(seconds, until=step)

    def value(path: str) -> Any:
        return store.read((SETTINGS, path))

    spin_setting = schema.by_key["Superb/PollInterval"]
    assert spin_setting.widget == "number" and spin_setting.type == "f"
    group = next(g for g in schema.groups if g.id == spin_setting.group)
    try:
        with page_view(HARNESS, [V2_IMPORTS]) as pv:
            glob = pv.singleton("Victron.VenusOS", "Global")
            glob.setProperty("_stubBackend", backend)
            _write(glob, "systemSettings.serviceUid", "dbus/" + SETTINGS)
            pv.start(800, 480)
            page = pv.load(f"qrc:/CanBridge/{qbuild.group_page(group)}")
            assert pv.warnings == [], pv.warnings
            spin = page.findChild(QQuickItem, qbuild.object_name(spin_setting))
            assert spin.property("value") == pytest.approx(float(spin_setting.default))
            assert spin.property("from") == pytest.approx(spin_setting.min)

            # the page writes: accepting 2.5 in the spin box changes the setting on D-Bus
            QMetaObject.invokeMethod(spin, "_stubAccept", Q_ARG("QVariant", 2.5))
            assert wait(lambda: value(spin_setting.path) == pytest.approx(2.5))
            raw = bus.get_object(SETTINGS, spin_setting.path).GetValue(
                dbus_interface="com.victronenergy.BusItem")
            assert isinstance(raw, dbus.Double)

            # D-Bus writes: the page shows the new value
            item = dbus.Interface(bus.get_object(SETTINGS, spin_setting.path),
                                  "com.victronenergy.BusItem")
            assert int(item.SetValue(dbus.Double(3.5))) == 0
            assert wait(lambda: spin.property("value") == pytest.approx(3.5)), (
                spin.property("value"))
            assert spin.property("_stubValueText") == f"3.5 {spin_setting.unit}"

            # an integer option and a node-ID list keep their types and syntax
            mode = schema.by_key["Superb/Mode"]
            radio = page.findChild(QQuickItem, qbuild.object_name(mode))
            QMetaObject.invokeMethod(radio, "_stubChoose", Q_ARG("QVariant", 1))
            assert wait(lambda: value(mode.path) == 1)
            assert isinstance(value(mode.path), int)
            assert wait(lambda: radio.property("currentIndex") == 1)

            nodes = schema.by_key["Superb/NodeIds"]
            field = page.findChild(QQuickItem, qbuild.object_name(nodes))
            QMetaObject.invokeMethod(field, "_stubAccept", Q_ARG("QVariant", "1-3, 9"))
            assert wait(lambda: value(nodes.path) == "1-3, 9")
            QMetaObject.invokeMethod(field, "_stubAccept", Q_ARG("QVariant", "1,,x"))
            process(0.3)
            assert value(nodes.path) == "1-3, 9"  # refused by the page's validateInput
            pv.fit_height(page, 48)
            pv.grab("gui-v2-roundtrip")
    finally:
        bus.remove_signal_receiver(on_change, signal_name="PropertiesChanged",
                                   dbus_interface="com.victronenergy.BusItem",
                                   bus_name=SETTINGS, path_keyword="path")
        bus.close()
