"""Build CanBridge's Remote Console pages from ``settings_schema.json``.

Produces, under the output directory (default ``build/qml``)::

    gui-v2/CanBridge/*.qml            the gui-v2 plugin's QML (also packed below)
    gui-v2/CanBridge.json             the plugin as the GX reads it (name, version,
                                      minRequiredVersion, integrations, base64 Qt resource)
    classic/PageSettingsCanBridge.qml the classic gui (v1) pages: the menu page ...
    classic/PageCanBridge<Group>.qml  ... and one page per schema group
    classic/PageSettings.CanBridge.snippet
                                      the MbSubMenu the installer inserts into PageSettings.qml

Every page item comes from a schema setting (control from ``widget``; unit, min, max, step,
decimals, option list and maximum length from the setting), so a setting added to the schema
appears on the pages at the next build. The resource is a binary Qt resource made by PySide6's
``rcc`` (zlib compression, which every gui-v2 can read) holding the QML under ``/CanBridge``.

Usage: ``python -m qml.build [--out DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from driver.canports import is_can_interface_setting
from driver.schema import Group, Schema, Setting, load_schema

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "qml"

PLUGIN_NAME = "CanBridge"
# gui-v2 1.2.14 is the oldest release with plugin support; the pages only use types and API
# present at every gui-v2 commit pinned in qml/stubs/pinned_api.json (this release, the newest
# release and main), which tests/qml checks with qml/api_check.py.
MIN_GUI_V2 = "v1.2.14"
# SuperB batteries are published with this product id, which other community battery drivers
# share: the device page checks /Mgmt/ProcessName before it offers anything.
BATTERY_PRODUCT_ID = 0xBA77
OUR_PROCESS_NAMES = ("dbus-superb",)
SETTINGS_PAGE = "CanBridgeSettings.qml"
DEVICE_PAGE = "CanBridgeDevice.qml"
CLASSIC_MENU_PAGE = "PageSettingsCanBridge"
CLASSIC_SNIPPET = "PageSettings.CanBridge.snippet"
# Text widgets whose input must be a node-ID list ("1,2,5-7"), checked before saving.
NODELIST_PATTERN = r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$"


# Where each driver publishes its last refused setting as one line (docs/web.md "Refused
# values"): the SuperB driver on com.victronenergy.canbridge.superb (its uid made from the
# settings service's: "dbus/com.victronenergy..." or "mqtt/<class>/0"), the SMA driver on its
# vebus service (gui-v2's system vebus service; absent: nothing shown).
REFUSAL_PATH = "/CanBridge/LastRefusal"
REFUSAL_SOURCES = {
    "Superb/": ('Global.systemSettings.serviceUid.replace("com.victronenergy.settings", '
                '"com.victronenergy.canbridge.superb").replace("settings/0", "canbridge/0")'),
    "Sma/": '(Global.system && Global.system.veBus ? Global.system.veBus.serviceUid : "")',
}


class BuildError(Exception):
    """The pages could not be built (schema problem or a failing Qt tool)."""


def qstr(text: str) -> str:
    """A QML/JavaScript string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def tr(text: str) -> str:
    """A translatable string expression (``qsTr`` needs a literal for ``lupdate``)."""
    return f"qsTr({qstr(text)})"


def number(value: float | int) -> str:
    """A QML number literal (no exponent, no trailing ``.0`` noise)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def camel(group_id: str) -> str:
    """``superb_limits`` -> ``SuperbLimits``."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", group_id) if p)


def group_page(group: Group) -> str:
    """File name of the gui-v2 page of one schema group."""
    return f"Page{camel(group.id)}.qml"


def classic_page(group: Group) -> str:
    """Component (file base) name of the classic page of one schema group."""
    return f"PageCanBridge{camel(group.id)}"


def decimals_of(setting: Setting) -> int:
    """Decimals shown for a numeric setting (explicit, else from the step, else 0/1)."""
    if setting.decimals is not None:
        return setting.decimals
    if setting.type == "i":
        return 0
    step = setting.step if setting.step is not None else 1
    text = f"{step:g}"
    return len(text.split(".", 1)[1]) if "." in text else 0


def step_of(setting: Setting) -> float:
    """The spin box step of a numeric setting."""
    return setting.step if setting.step is not None else 1


def indent(lines: list[str], level: int) -> list[str]:
    """``lines`` indented by ``level`` tabs (blank lines stay blank)."""
    return [("\t" * level + line) if line else "" for line in lines]


def object_name(setting: Setting) -> str:
    """A stable objectName for tests: the setting's key with ``/`` as ``_``."""
    return "setting_" + setting.key.replace("/", "_")


# --------------------------------------------------------------------------- gui-v2


def v2_item(setting: Setting) -> list[str]:
    """The gui-v2 list item of one setting."""
    uid = f'dataItem.uid: Global.systemSettings.serviceUid + {qstr(setting.path)}'
    head = [f"objectName: {qstr(object_name(setting))}", f"text: {tr(setting.label)}",
            f"caption: {tr(setting.help)}", uid]
    if setting.widget == "number":
        body = [f"from: {number(setting.min if setting.min is not None else 0)}",
                f"to: {number(setting.max if setting.max is not None else 0)}",
                f"stepSize: {number(step_of(setting))}",
                f"decimals: {decimals_of(setting)}"]
        if setting.unit:
            body.append(f"suffix: {qstr(setting.unit)}")
        return ["ListSpinBox {", *indent(head + body, 1), "}"]
    if setting.widget == "option":
        opts = [f"{{ display: {tr(o.label)}, value: {qstr(o.value) if isinstance(o.value, str) else number(o.value)} }}"  # noqa: E501
                for o in setting.options]
        body = ["optionModel: [", *indent([o + "," for o in opts[:-1]] + opts[-1:], 1), "]"]
        return ["ListRadioButtonGroup {", *indent(head + body, 1), "}"]
    if setting.widget == "switch":
        body = ["valueTrue: 1", "valueFalse: 0"]
        return ["ListSwitch {", *indent(head + body, 1), "}"]
    if setting.widget in ("text", "nodelist"):
        ident = "text_" + re.sub(r"\W", "_", setting.key)
        maxlen = setting.maxlength if setting.maxlength is not None else 255
        check = [f"if (text.length > {maxlen})",
                 f"\treturn Utils.validationResult(VenusOS.InputValidation_Result_Error, "
                 f"qsTr(\"At most %1 characters\").arg({maxlen}))"]
        if setting.widget == "nodelist":
            check += [f"if (!/{NODELIST_PATTERN}/.test(text))",
                      "\treturn Utils.validationResult(VenusOS.InputValidation_Result_Error, "
                      "qsTr(\"Node IDs separated by commas, ranges like 1-4\"))"]
        body = ["validateInput: function() {",
                *indent([f"const text = {ident}.secondaryText", *check,
                         "return Utils.validationResult(VenusOS.InputValidation_Result_OK)"], 1),
                "}"]
        return ["ListTextField {", f"\tid: {ident}", *indent(head + body, 1), "}"]
    raise BuildError(f"{setting.path}: no gui-v2 control for widget '{setting.widget}'")


# Venus's own list of the GX's CAN interfaces (venus-platform, com.victronenergy.platform
# /CanBus/Interfaces: [{"interface": "can0", "name": "VE.Can port", "config": 0}, ...]; config 1
# = CAN-bus BMS only), as gui-v2's Settings > Connectivity page reads it (v1.2.14 to main); and
# the SuperB driver's resolution error (com.victronenergy.canbridge.superb /Status/CanError).
CAN_PORTS_ITEM = ["VeQuickItem {", "\tid: canInterfaces",
                  "\tuid: Global.venusPlatform.serviceUid + \"/CanBus/Interfaces\"", "}"]
SUPERB_MANAGER = "com.victronenergy.canbridge.superb"
BMS_ONLY_CONFIG = 1  # gui-v2 src/enums.h CanBusConfig_ForcedCanBusBms


def can_port_items(setting: Setting, field_id: str) -> list[list[str]]:
    """The CAN ports of this GX as a choice that writes ``setting`` (through its text field),
    and, for SuperB, the driver's error when the configured port is unusable."""
    key = re.sub(r"\W", "_", setting.key)
    superb = setting.key.startswith("Superb/")
    auto = "auto: this GX's VE.Can port" if superb else "auto: this GX's second CAN port"
    choice = [
        "ListRadioButtonGroup {",
        *indent([
            f"objectName: {qstr('ports_' + key)}",
            f"text: {tr('CAN ports found')}",
            f"caption: {tr('Choose the port to use; the field above takes any other name.')}",
            "updateDataOnClick: false",
            "optionModel: {",
            *indent([
                f"const options = [{{ display: {tr(auto)}, value: \"auto\" }}]",
                "let found = canInterfaces.value",
                "try {",
                "\tif (typeof found === \"string\")",
                "\t\tfound = JSON.parse(found)",
                "} catch (e) {",
                "\tfound = []",
                "}",
                "for (let i = 0; found && i < found.length; ++i) {",
                "\tconst p = found[i]",
                "\tconst label = p.interface + (p.name ? \" (\" + p.name + \")\" : \"\")",
                f"\t\t+ (p.config === {BMS_ONLY_CONFIG} ? {tr(', BMS only')} : \"\")",
                "\toptions.push({ display: label, value: p.interface })",
                "}",
                "return options",
            ], 1),
            "}",
            "currentIndex: {",
            *indent([f"const v = {field_id}.dataItem.value",
                     "for (let i = 0; i < optionModel.length; ++i) {",
                     "\tif (optionModel[i].value === v)", "\t\treturn i", "}",
                     "return -1"], 1),
            "}",
            f"onOptionClicked: function(index) {{ {field_id}.dataItem.setValue("
            "optionModel[index].value) }",
        ], 1),
        "}",
    ]
    # The problem with the configured port: the SuperB driver's own message when it has one,
    # else the page's check against Venus's list (a name this GX does not have; for SuperB the
    # BMS-only port), as the drivers and the web page check it.
    from_driver = "canError.value === undefined ? \"\" : String(canError.value)" if superb \
        else "\"\""
    bms = (f"found[i].config === {BMS_ONLY_CONFIG} ? "
           f"{tr('%1 is reserved by Venus for CAN-bus BMS batteries')}.arg(v) : \"\""
           if superb else "\"\"")
    problem = [
        "ListText {",
        *indent([
            f"objectName: {qstr('error_' + key)}",
            f"text: {tr('CAN port problem')}",
            "secondaryText: {",
            *indent([
                f"const driver = {from_driver}",
                "if (driver.length > 0)",
                "\treturn driver",
                f"const raw = {field_id}.dataItem.value",
                "const v = raw === undefined ? \"\" : String(raw)",
                "if (v === \"\" || v === \"auto\" || v.indexOf(\":\") >= 0)",
                "\treturn \"\"",
                "let found = canInterfaces.value",
                "try {",
                "\tif (typeof found === \"string\")",
                "\t\tfound = JSON.parse(found)",
                "} catch (e) {",
                "\tfound = undefined",
                "}",
                "if (!found || !found.length)",
                "\treturn \"\"  // Venus's list unknown: nothing to say",
                "for (let i = 0; i < found.length; ++i) {",
                "\tif (found[i].interface === v)",
                f"\t\treturn {bms}",
                "}",
                f"return {tr('CAN interface %1 does not exist on this GX')}.arg(v)",
            ], 1),
            "}",
            "preferredVisible: secondaryText.length > 0"], 1),
        "}"]
    return [choice, problem]


def can_page_extra(settings: list[Setting]) -> list[str]:
    """Page-level items the CAN port choice needs (none without a CanInterface setting)."""
    if not any(is_can_interface_setting(s.key) for s in settings):
        return []
    extra = list(CAN_PORTS_ITEM)
    if any(is_can_interface_setting(s.key) and s.key.startswith("Superb/") for s in settings):
        extra += ["", "VeQuickItem {", "\tid: canError",
                  f"\tuid: BackendConnection.serviceUidFromName({qstr(SUPERB_MANAGER)}, 0)"
                  " + \"/Status/CanError\"", "}"]
    return extra


def v2_group_items(settings: list[Setting]) -> list[list[str]]:
    """The items of one group's gui-v2 page."""
    items: list[list[str]] = []
    for s in settings:
        items.append(v2_item(s))
        if is_can_interface_setting(s.key) and s.widget == "text":
            items += can_port_items(s, "text_" + re.sub(r"\W", "_", s.key))
        if in_use := v2_in_use(s):
            items.append(in_use)
    return items


def v2_refusal_item(schema: Schema, group: Group) -> list[list[str]]:
    """A read-only line with the driver's last refusal of a value of this group (or none)."""
    keys = [s.key for s in schema.in_group(group.id)]
    for prefix, service_uid in REFUSAL_SOURCES.items():
        if any(k.startswith(prefix) for k in keys):
            return [["ListText {", '\tobjectName: "refusal"',
                     f"\ttext: {tr('Refused by the driver')}",
                     f"\tdataItem.uid: {service_uid} + {qstr(REFUSAL_PATH)}",
                     '\tcaption: dataItem.value === undefined ? "" : String(dataItem.value)',
                     '\tpreferredVisible: caption !== ""', "}"]]
    return []


#: read-only rows after a setting: what dbus-sma actually uses, from its vebus service
#: (``/CanBridge/*``; docs/sma.md "Battery source and SoC source")
IN_USE = {"Sma/BatteryService": ("BatterySource", "Battery source in use"),
          "Sma/SocService": ("SocSource", "State of charge source in use")}
#: dbus-sma's vebus service as systemcalc names it (com.victronenergy.system /VebusService: the
#: vebus service the system uses; on a Sunny Island system the bridge's own). Its name carries
#: the *resolved* CAN port, which a page cannot know when the setting says "auto".
SYSTEM_VEBUS_V2 = '(Global.system && Global.system.veBus ? Global.system.veBus.serviceUid : "")'


def v2_in_use(setting: Setting) -> list[str]:
    """gui-v2: the value dbus-sma uses for ``setting`` (empty list if none)."""
    if setting.key not in IN_USE:
        return []
    path, label = IN_USE[setting.key]
    ident = "inUse" + path
    uid = f'{SYSTEM_VEBUS_V2} + {qstr("/CanBridge/" + path)}'
    return ["ListText {", f"\tobjectName: {qstr(ident)}", f"\ttext: {tr(label)}",
            f"\tsecondaryText: {ident}Item.value ? String({ident}Item.value) : {tr('none')}",
            "", "\tVeQuickItem {", f"\t\tid: {ident}Item", f"\t\tuid: {uid}", "\t}", "}"]


def classic_in_use(setting: Setting) -> list[str]:
    """Classic gui: the value dbus-sma uses for ``setting`` (empty list if none)."""
    if setting.key not in IN_USE:
        return []
    path, label = IN_USE[setting.key]
    ident = "inUse" + path
    value = f"({ident}.valid && {ident}.value ? {ident}.value : {tr('none')})"
    return ["MbSubMenu {",
            f"\tdescription: {tr(label)} + {qstr(': ')} + {value}",
            "", "\tVBusItem {", f"\t\tid: {ident}Service",
            '\t\tbind: "com.victronenergy.system/VebusService"', "\t}",
            "", "\tVBusItem {", f"\t\tid: {ident}",
            f"\t\tbind: {ident}Service.valid ? {ident}Service.value + "
            f"{qstr('/CanBridge/' + path)} : \"\"",
            "\t}", "}"]


#: the classic gui's service names for the same refusal lines (VBusItem binds a plain service
#: name; dbus-sma's vebus service is found through systemcalc's /VebusService)
CLASSIC_REFUSAL_SOURCES = {"Superb/": '"com.victronenergy.canbridge.superb"', "Sma/": None}


def classic_refusal_item(schema: Schema, group: Group) -> list[list[str]]:
    """Classic gui: a read-only line with the driver's last refusal in this group (or none);
    shown only while there is one."""
    keys = [s.key for s in schema.in_group(group.id)]
    for prefix, service in CLASSIC_REFUSAL_SOURCES.items():
        if not any(k.startswith(prefix) for k in keys):
            continue
        lines = ["MbSubMenu {", '\tdescription: refusal.valid ? ' + tr("Refused by the driver")
                 + ' + ": " + refusal.value : ""',
                 '\tshow: refusal.valid && String(refusal.value) !== ""']
        if service is None:
            lines += ["", "\tVBusItem {", "\t\tid: refusalService",
                      '\t\tbind: "com.victronenergy.system/VebusService"', "\t}"]
            bind = f'refusalService.valid ? refusalService.value + {qstr(REFUSAL_PATH)} : ""'
        else:
            bind = f"{service} + {qstr(REFUSAL_PATH)}"
        lines += ["", "\tVBusItem {", "\t\tid: refusal", f"\t\tbind: {bind}", "\t}", "}"]
        return [lines]
    return []


def v2_page(title_expr: str, items: list[list[str]], root: str = "Page",
            extra: list[str] | None = None) -> str:
    """A gui-v2 page with a list of items."""
    body = [f"title: {title_expr}", *(extra or []), "", "GradientListView {",
            "\tmodel: VisibleItemModel {"]
    for item in items:
        body += indent(item, 2)
    body += ["\t}", "}"]
    lines = ["// Generated by qml/build.py from settings_schema.json: do not edit.",
             "import QtQuick", "import Victron.VenusOS", "", f"{root} {{", "\tid: root",
             *indent(body, 1), "}", ""]
    return "\n".join(lines)


def nav_item(group: Group, visible: str | None = None) -> list[str]:
    """A navigation entry to one group's gui-v2 page.

    ``ListNavigation`` + ``Global.pageManager.pushPage`` exists in every gui-v2 from v1.2.14 to
    main; ``SettingsListNavigation`` (with ``pageSource``) was deleted after v1.3.15.
    """
    url = f"qrc:/{PLUGIN_NAME}/{group_page(group)}"
    lines = [f"objectName: {qstr('nav_' + group.id)}", f"text: {tr(group.label)}",
             f"caption: {tr(group.help)}",
             f"onClicked: Global.pageManager.pushPage({qstr(url)}, {{\"title\": text}})"]
    if visible:
        lines.append(f"preferredVisible: {visible}")
    return ["ListNavigation {", *indent(lines, 1), "}"]


def device_groups(schema: Schema) -> list[Group]:
    """Groups shown from a battery's device-list entry: those with SuperB settings."""
    return [g for g in schema.groups
            if any(s.key.startswith("Superb/") for s in schema.in_group(g.id))]


def gui_v2_files(schema: Schema, version: str) -> dict[str, str]:
    """File name -> QML text of every file of the gui-v2 plugin."""
    files: dict[str, str] = {}
    nav = [nav_item(g) for g in schema.groups if schema.in_group(g.id)]
    about = ["ListText {", "\tobjectName: \"version\"", f"\ttext: {tr('Plugin version')}",
             f"\tsecondaryText: {qstr(version)}", "}"]
    files[SETTINGS_PAGE] = v2_page(qstr(PLUGIN_NAME), [*nav, about])
    for group in schema.groups:
        settings = schema.in_group(group.id)
        if settings:
            files[group_page(group)] = v2_page(
                tr(group.label), [*v2_refusal_item(schema, group), *v2_group_items(settings)],
                extra=can_page_extra(settings))
    names = " || ".join(f"name === {qstr(n)}" for n in OUR_PROCESS_NAMES)
    extra = [
        "// 0xBA77 is shared with other battery drivers: offer settings only for ours.",
        "readonly property bool ours: {",
        "\tconst path = String(processName.value === undefined ? \"\" : processName.value)",
        "\tconst name = path.split(\"/\").pop().replace(/\\.py$/, \"\")",
        f"\treturn {names}",
        "}", "",
        "VeQuickItem {", "\tid: processName",
        "\tuid: root.device ? root.device.serviceUid + \"/Mgmt/ProcessName\" : \"\"", "}",
    ]
    notours = ["ListText {", "\tobjectName: \"notOurs\"",
               f"\ttext: {tr('This battery is not managed by CanBridge')}",
               "\tpreferredVisible: !root.ours", "}"]
    items = [notours, *[nav_item(g, "root.ours") for g in device_groups(schema)]]
    files[DEVICE_PAGE] = v2_page(tr("CanBridge settings"), items, root="DeviceListPluginPage",
                                 extra=extra)
    return files


# --------------------------------------------------------------------------- classic gui


def classic_item(setting: Setting) -> list[str]:
    """The classic gui item of one setting."""
    bind = qstr("com.victronenergy.settings" + setting.path)
    if setting.widget == "number":
        lines = [f"description: {tr(setting.label)}", f"item.bind: {bind}",
                 f"item.min: {number(setting.min if setting.min is not None else 0)}",
                 f"item.max: {number(setting.max if setting.max is not None else 0)}",
                 f"item.step: {number(step_of(setting))}",
                 f"item.decimals: {decimals_of(setting)}"]
        if setting.unit:
            lines.append(f"item.unit: {qstr(setting.unit)}")
        return ["MbSpinBox {", *indent(lines, 1), "}"]
    if setting.widget == "option":
        opts = [f"MbOption {{ description: {tr(o.label)}; value: "
                f"{qstr(o.value) if isinstance(o.value, str) else number(o.value)} }}"
                for o in setting.options]
        lines = [f"description: {tr(setting.label)}", f"bind: {bind}", "possibleValues: [",
                 *indent([o + "," for o in opts[:-1]] + opts[-1:], 1), "]"]
        return ["MbItemOptions {", *indent(lines, 1), "}"]
    if setting.widget == "switch":
        return ["MbSwitch {", f"\tname: {tr(setting.label)}", f"\tbind: {bind}", "}"]
    if setting.widget in ("text", "nodelist"):
        maxlen = setting.maxlength if setting.maxlength is not None else 255
        return ["MbEditBox {",
                f"\tdescription: {tr(setting.label)}", f"\titem.bind: {bind}",
                f"\tmaximumLength: {maxlen}", "}"]
    raise BuildError(f"{setting.path}: no classic control for widget '{setting.widget}'")


# The CAN port names of Venus's udev rules (meta-victronenergy meta-venus/recipes-core/udev/
# files/*/machine.rules): can0/can1 on a Cerbo GX, vecan0/vecan1 on a Cerbo GX B1 and Ekrano. The
# classic gui's option list is static, so these are offered, each labelled at run time from
# Venus's list of this GX's interfaces (venus-platform /CanBus/Interfaces): "(VE.Can port)",
# ", BMS only" or "(not on this GX)". Other ports (USB adapters) go into the text field.
CLASSIC_PORT_NAMES = ("can0", "can1", "vecan0", "vecan1")
CLASSIC_CAN_FUNCTIONS = [
    "property VBusItem canInterfaces: VBusItem { bind: \"com.victronenergy.platform/CanBus/"
    "Interfaces\" }",
    "",
    "function canPortLabel(name) {",
    "\tvar found = canInterfaces.value",
    "\ttry {",
    "\t\tif (typeof found === \"string\")",
    "\t\t\tfound = JSON.parse(found)",
    "\t} catch (e) {",
    "\t\tfound = undefined",
    "\t}",
    "\tif (!found || found.length === undefined)",
    f"\t\treturn name + {tr(' (unknown)')}",
    "\tfor (var i = 0; i < found.length; ++i) {",
    "\t\tif (found[i].interface === name)",
    "\t\t\treturn name + (found[i].name ? \" (\" + found[i].name + \")\" : \"\")",
    f"\t\t\t\t+ (found[i].config === {BMS_ONLY_CONFIG} ? {tr(', BMS only')} : \"\")",
    "\t}",
    f"\treturn name + {tr(' (not on this GX)')}",
    "}",
]


def classic_can_choice(setting: Setting, box_id: str) -> list[str]:
    """An MbItemOptions writing the same setting as the text box ``box_id``."""
    auto = "auto: this GX's VE.Can port" if setting.key.startswith("Superb/") else \
        "auto: this GX's second CAN port"
    opts = [f"MbOption {{ description: {tr(auto)}; value: \"auto\" }}"]
    opts += [f"MbOption {{ description: root.canPortLabel({qstr(n)}); value: {qstr(n)} }}"
             for n in CLASSIC_PORT_NAMES]
    return ["MbItemOptions {", f"\tdescription: {tr('CAN port')}", f"\tbind: {box_id}.item.bind",
            "\tpossibleValues: [", *indent([o + "," for o in opts[:-1]] + opts[-1:], 2), "\t]",
            "}"]


def classic_group_items(settings: list[Setting]) -> list[list[str]]:
    """The items of one group's classic page."""
    items: list[list[str]] = []
    for s in settings:
        item = classic_item(s)
        if is_can_interface_setting(s.key) and s.widget == "text":
            box_id = "box_" + re.sub(r"\W", "_", s.key)
            items += [[item[0], f"\tid: {box_id}", *item[1:]], classic_can_choice(s, box_id)]
        else:
            items.append(item)
        if in_use := classic_in_use(s):
            items.append(in_use)
    return items


def classic_page_text(title_expr: str, items: list[list[str]],
                      extra: list[str] | None = None) -> str:
    """A classic gui page."""
    lines = ["// Generated by qml/build.py from settings_schema.json: do not edit.",
             "import QtQuick 2.0", "import com.victron.velib 1.0", "", "MbPage {",
             "\tid: root", f"\ttitle: {title_expr}", *indent(extra or [], 1), "",
             "\tmodel: VisibleItemModel {"]
    for item in items:
        lines += indent(item, 2)
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


def classic_menu_entry(title: str, page: str) -> list[str]:
    """An MbSubMenu opening a classic page."""
    return ["MbSubMenu {", f"\tdescription: {tr(title)}",
            f"\tsubpage: Component {{ {page} {{}} }}", "}"]


def classic_files(schema: Schema) -> dict[str, str]:
    """File name -> text of the classic gui pages and the PageSettings.qml snippet."""
    files: dict[str, str] = {}
    menu = []
    for group in schema.groups:
        settings = schema.in_group(group.id)
        if not settings:
            continue
        name = classic_page(group)
        has_can = any(is_can_interface_setting(s.key) for s in settings)
        files[name + ".qml"] = classic_page_text(
            tr(group.label), [*classic_refusal_item(schema, group),
                              *classic_group_items(settings)],
            extra=["", *CLASSIC_CAN_FUNCTIONS] if has_can else None)
        menu.append(classic_menu_entry(group.label, name))
    files[CLASSIC_MENU_PAGE + ".qml"] = classic_page_text(qstr(PLUGIN_NAME), menu)
    files[CLASSIC_SNIPPET] = "\n".join(
        ["// CanBridge entry for the classic gui's PageSettings.qml (inserted by the installer).",
         *classic_menu_entry(PLUGIN_NAME, CLASSIC_MENU_PAGE), ""])
    return files


# --------------------------------------------------------------------------- packing


def tool(name: str) -> str:
    """The path of a PySide6 tool (from the running interpreter's environment)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BuildError(f"{name} not found: install PySide6-Essentials (make deps)")
    return found


def pack_resource(files: dict[str, str], prefix: str) -> bytes:
    """A binary Qt resource (zlib) holding ``files`` under ``/<prefix>``, made with rcc."""
    with tempfile.TemporaryDirectory(prefix="cb-rcc-") as tmp:
        d = Path(tmp)
        entries = []
        for name, text in sorted(files.items()):
            (d / name).write_text(text, encoding="utf-8")
            entries.append(f"    <file>{name}</file>")
        qrc = d / "plugin.qrc"
        qrc.write_text("<!DOCTYPE RCC>\n<RCC version=\"1.0\">\n"
                       f"  <qresource prefix=\"/{prefix}\">\n" + "\n".join(entries)
                       + "\n  </qresource>\n</RCC>\n", encoding="utf-8")
        out = d / "plugin.rcc"
        proc = subprocess.run([tool("pyside6-rcc"), "--binary", "--compress-algo", "zlib",
                               "-o", str(out), str(qrc)], check=False, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise BuildError(f"rcc failed: {proc.stderr.strip()}")
        return out.read_bytes()


def plugin_json(resource: bytes, version: str) -> dict:
    """The plugin document gui-v2 reads from ``/data/apps/enabled/<name>/gui-v2/<name>.json``."""
    return {
        "name": PLUGIN_NAME,
        "version": version,
        "minRequiredVersion": MIN_GUI_V2,
        "integrations": [
            {"type": 1, "url": f"qrc:/{PLUGIN_NAME}/{SETTINGS_PAGE}"},
            {"type": 2, "productId": f"0x{BATTERY_PRODUCT_ID:X}", "title": PLUGIN_NAME,
             "url": f"qrc:/{PLUGIN_NAME}/{DEVICE_PAGE}"},
        ],
        "resource": base64.b64encode(resource).decode("ascii"),
    }


def project_version() -> str:
    """The project version from ``pyproject.toml``."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@dataclass
class BuildResult:
    """Where the build put things."""

    out: Path
    plugin_json: Path
    gui_v2_dir: Path
    classic_dir: Path


def build(out: Path = DEFAULT_OUT, schema: Schema | None = None,
          version: str | None = None) -> BuildResult:
    """Generate and pack every page into ``out``; returns the paths."""
    schema = schema if schema is not None else load_schema()
    version = version if version is not None else project_version()
    v2 = gui_v2_files(schema, version)
    classic = classic_files(schema)
    v2_dir = out / "gui-v2" / PLUGIN_NAME
    classic_dir = out / "classic"
    for d in (v2_dir, classic_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for name, text in v2.items():
        (v2_dir / name).write_text(text, encoding="utf-8")
    for name, text in classic.items():
        (classic_dir / name).write_text(text, encoding="utf-8")
    doc = plugin_json(pack_resource(v2, PLUGIN_NAME), version)
    json_path = out / "gui-v2" / f"{PLUGIN_NAME}.json"
    json_path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    return BuildResult(out, json_path, v2_dir, classic_dir)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description="Build CanBridge's Remote Console pages")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        res = build(args.out)
    except BuildError as exc:
        print(f"qml build: {exc}", file=sys.stderr)
        return 1
    size = res.plugin_json.stat().st_size
    print(f"qml build: {res.plugin_json} ({size} bytes), classic pages in {res.classic_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
