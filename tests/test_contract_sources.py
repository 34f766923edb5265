"""The path contract (docs/contract/{battery,vebus}.json) against pinned extracts of Victron's
own consumers (docs/contract/pinned.json, written by scripts/pin_contract.py from gui-v2,
dbus_modbustcp, dbus-systemcalc-py and the recordings of real devices).

Re-pinning against newer mirrors and running these tests shows every Venus change that touches
a path: a consumer that stops or starts reading a published path, a register that moves, a new
path that is neither published nor listed as deliberately left out.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract"
CLASSES = ("battery", "vebus")


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((CONTRACT / f"{name}.json").read_text(encoding="utf-8")))


PINNED = load("pinned")
CONTRACTS = {c: load(c) for c in CLASSES}


def covered(pattern: str, published: dict[str, Any]) -> bool:
    """A consumer's path (or gui-v2 pattern) is published: a path matches it, or it is a prefix
    gui-v2 extends (``/Ac/Out/L1`` + ``/V``)."""
    return any(fnmatch.fnmatchcase(p, pattern) or p.startswith(pattern.rstrip("*") + "/")
               for p in published)


def left_out(pattern: str, not_published: dict[str, str]) -> bool:
    return any(fnmatch.fnmatchcase(pattern, key) for key in not_published)


def test_pinned_sources_are_recorded_commits() -> None:
    for name in ("gui-v2", "dbus_modbustcp", "dbus-systemcalc-py"):
        src = PINNED["sources"][name]
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]), name
        assert src["repository"] == f"https://github.com/victronenergy/{name}"
    assert {r["class"] for r in PINNED["recordings"].values()} == {"battery", "vebus"}
    for r in PINNED["recordings"].values():
        assert re.fullmatch(r"[0-9a-f]{64}", r["sha256"]) and r["paths"]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_consumer_path_is_published_or_deliberately_left_out(cls: str) -> None:
    contract = CONTRACTS[cls]
    paths, np = contract["paths"], contract["not_published"]
    sources = {"modbus": PINNED["modbus"][cls], "systemcalc": PINNED["systemcalc"][cls],
               "gui-v2": PINNED["gui-v2"][cls]}
    missing = sorted(f"{src}: {p}" for src, found in sources.items() for p in found
                     if not covered(p, paths) and not left_out(p, np))
    assert not missing, "neither published nor in not_published:\n" + "\n".join(missing)
    # a reason for every path left out, and no published path among them
    assert all(isinstance(v, str) and v for v in np.values())
    clash = [(p, k) for p in paths for k in np if k.startswith("/") and fnmatch.fnmatchcase(p, k)]
    assert not clash


@pytest.mark.parametrize("cls", CLASSES)
def test_claimed_consumers_match_the_pinned_sources(cls: str) -> None:
    gui: dict[str, list[str]] = {}
    for group in (cls, "device"):
        for pat, files in PINNED["gui-v2"][group].items():
            gui[pat] = gui.get(pat, []) + files
    errors = []
    for path, entry in CONTRACTS[cls]["paths"].items():
        cons = entry["consumers"]
        # systemcalc and Modbus: exactly what the sources say, both ways
        sc = PINNED["systemcalc"][cls].get(path, [])
        if sorted(cons.get("systemcalc", [])) != sc:
            errors.append(f"{path}: systemcalc {cons.get('systemcalc')} != pinned {sc}")
        regs = [r["register"] for r in PINNED["modbus"][cls].get(path, [])]
        if sorted(cons.get("modbus", [])) != sorted(regs):
            errors.append(f"{path}: modbus {cons.get('modbus')} != pinned {regs}")
        # gui-v2: each claimed file reads it (through a literal path or a built one)
        for f in cons.get("gui-v2", []):
            if not any(f in files and fnmatch.fnmatchcase(path, pat)
                       for pat, files in gui.items()):
                errors.append(f"{path}: gui-v2 {f} does not read it")
        # and every file that names it literally is claimed
        for f in gui.get(path, []):
            if f not in cons.get("gui-v2", []):
                errors.append(f"{path}: read by gui-v2 {f}, not claimed")
        custom = path.startswith(tuple(CONTRACTS[cls]["custom_prefixes"]))
        if cons.get("vrm") == custom:
            kind = "custom" if custom else "standard"
            errors.append(f"{path}: vrm flag {cons.get('vrm')} for a {kind} path")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("cls", CLASSES)
def test_types_agree_with_modbus_and_recordings(cls: str) -> None:
    """Numbers where consumers expect numbers, strings where they expect strings (Modbus
    converts between number types itself; a string where it expects a number reads 0)."""
    recs = [r for r in PINNED["recordings"].values() if r["class"] == cls]
    errors = []
    for path, entry in CONTRACTS[cls]["paths"].items():
        text = entry["type"] == "s"
        for reg in PINNED["modbus"][cls].get(path, []):
            if text != (reg["dbus_type"] == "s"):
                errors.append(f"{path}: type {entry['type']} but register {reg['register']} "
                              f"converts {reg['dbus_type']}")
        for r in recs:
            seen = r["paths"].get(path)
            if seen and seen["type"] != "ARRAY" and text != (seen["type"] == "STRING") \
                    and "deviation" not in entry:
                errors.append(f"{path}: {entry['type']} vs recorded {seen['type']}")
        if "recording" in entry:
            texts = [r["paths"][path]["text"] or "(invalid)" for r in recs if path in r["paths"]]
            if entry["recording"] not in texts:
                errors.append(f"{path}: recording {entry['recording']!r} not in {texts}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("cls", CLASSES)
def test_text_formats_reproduce_the_recorded_texts(cls: str) -> None:
    """Where the contract's format and a recording meet, the format renders the recorded
    value as the real device does (units and decimals)."""
    recs = [r for r in PINNED["recordings"].values() if r["class"] == cls]
    checked = 0
    for path, entry in CONTRACTS[cls]["paths"].items():
        fmt = entry["text"]
        if not isinstance(fmt, str) or "{" not in fmt or "deviation" in entry:
            continue
        for r in recs:
            seen = r["paths"].get(path)
            if not seen or not seen["text"] or fmt.startswith("0x"):
                continue
            m = re.match(r"(-?[\d.]+)", seen["text"])
            assert m, (path, seen)
            checked += 1
            assert fmt.format(float(m.group(1))) == seen["text"], (path, fmt, seen["text"])
    assert checked >= 5


def test_modbus_reaches_the_default_device_instances() -> None:
    """dbus_modbustcp (mappings.cpp): a unit ID is first taken as the device instance itself
    (0..255, one Modbus byte), else looked up in unitid2di.csv. The defaults, and the next 64
    instances the settings service may move a battery to, must all be reachable."""
    from driver.sma.main import VEBUS_DEFAULT_INSTANCE
    from driver.superb.dbus_services import BATTERY_DEFAULT_INSTANCE

    mapped = set(PINNED["unitid2di"].values())

    def reachable(instance: int) -> bool:
        return 0 <= instance <= 255 or instance in mapped

    assert not reachable(513)  # the old second battery (issue 17)
    assert all(reachable(BATTERY_DEFAULT_INSTANCE + n) for n in range(65))
    assert reachable(VEBUS_DEFAULT_INSTANCE) and VEBUS_DEFAULT_INSTANCE < 276


def test_pin_script_extracts_from_git_mirrors(tmp_path: Path) -> None:
    """scripts/pin_contract.py against small git repositories laid out like the real ones."""
    def repo(name: str, files: dict[str, str]) -> str:
        d = tmp_path / name
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        git = ["git", "-C", str(d), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "x"], check=True)
        return str(d / ".git")

    gui = repo("gui", {
        "pages/vebusdevice/PageX.qml":
            'Item {\n\tdataItem.uid: root.bindPrefix + "/Bms/AllowToCharge"\n'
            '\tuid: root.serviceUid + "/Ac/In/" + root.inputNumber + "/CurrentLimit"\n'
            '\t// uid: root.bindPrefix + "/Commented"\n}\n',
        "pages/vebusdevice/Model.qml": 'ListElement { pathSuffix: "/Ripple" }\n',
        "pages/settings/devicelist/battery/PageB.qml": 'X { uid: root.bindPrefix + "/State" }\n',
        "pages/settings/PageDeviceInfo.qml": 'X { uid: root.serviceUid + "/CustomName" }\n',
    })
    mb = repo("mb", {
        "attributes.csv": "com.victronenergy.battery,/Soc,y,%,266,uint16,10,R\n"
                          "com.victronenergy.vebus,/Mode,u,1=Charger Only,33,uint16,1,W\n"
                          "com.victronenergy.vebus,RESERVED,d,,122,reserved[8],1,R\n"
                          "com.victronenergy.grid,/Ac/L1/Power,d,W,2600,int16,1,R\n",
        "unitid2di.csv": "Unit ID, /DeviceInstance,Remark\n225,512,CAN-bus BMS\n"})
    sc = repo("sc", {
        "dbus_systemcalc.py": "t = {'com.victronenergy.battery': {'/Soc': d, '/State': d}}\n",
        "delegates/x.py": "def get_input(self):\n"
                          "    return [('com.victronenergy.vebus', ['/Bms/AllowToCharge'])]\n"})
    rec = tmp_path / "rec"
    rec.mkdir()
    for name in ("venus-docker_simulations_lp_bms_a.tsv", "dbus-recorder_bms.tsv",
                 "venus-docker_simulations_lpp_vebus.tsv"):
        (rec / name).write_text("com.victronenergy.x\n/Soc\tDOUBLE\t98.8\t98.8%\n"
                                "/Dc/0/Temperature\tARRAY\t[]\t\n0\t/Soc\tDOUBLE\t1\t1%\n")
    out = tmp_path / "pinned.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "pin_contract.py"), "--gui-v2", gui,
                    "--modbustcp", mb, "--systemcalc", sc, "--recordings", str(rec),
                    "--out", str(out)], check=True, capture_output=True)
    got = json.loads(out.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", got["sources"]["gui-v2"]["commit"])
    assert got["gui-v2"]["vebus"] == {
        "/Bms/AllowToCharge": ["pages/vebusdevice/PageX.qml"],
        "/Ac/In/*/CurrentLimit": ["pages/vebusdevice/PageX.qml"],
        "*/Ripple": ["pages/vebusdevice/Model.qml"]}
    assert got["gui-v2"]["battery"] == {"/State": ["pages/settings/devicelist/battery/PageB.qml"]}
    assert got["gui-v2"]["device"] == {"/CustomName": ["pages/settings/PageDeviceInfo.qml"]}
    assert got["modbus"]["battery"]["/Soc"][0]["register"] == 266
    assert list(got["modbus"]["vebus"]) == ["/Mode"]
    assert got["unitid2di"] == {"225": 512}
    assert got["systemcalc"]["battery"] == {"/Soc": ["dbus_systemcalc.py"],
                                            "/State": ["dbus_systemcalc.py"]}
    assert got["systemcalc"]["vebus"] == {"/Bms/AllowToCharge": ["delegates/x.py"]}
    paths = got["recordings"]["dbus-recorder_bms.tsv"]["paths"]
    assert paths == {"/Soc": {"type": "DOUBLE", "text": "98.8%"},
                     "/Dc/0/Temperature": {"type": "ARRAY", "text": ""}}


def test_docs_table_is_the_contract() -> None:
    """docs/paths.md carries the contract as tables, generated from the contract files."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pin_contract
    finally:
        sys.path.pop(0)
    doc = (ROOT / "docs" / "paths.md").read_text(encoding="utf-8")
    assert pin_contract.render_tables() in doc, "run: python scripts/pin_contract.py --table"
