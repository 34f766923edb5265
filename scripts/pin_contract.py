#!/usr/bin/env python3
"""Pin what Victron's own consumers read from battery and vebus services.

Reads git mirrors of victronenergy/gui-v2, victronenergy/dbus_modbustcp and
victronenergy/dbus-systemcalc-py (any clone or bare mirror; ``git --git-dir`` is used, nothing
is checked out) plus the reference recordings of real devices, and writes
``docs/contract/pinned.json``: per service class the D-Bus paths each consumer reads, with the
commits they were read at. ``tests/test_contract_sources.py`` checks the contract
(``docs/contract/{battery,vebus}.json``) against this file, so re-running the script against
newer mirrors shows every Venus change that touches a path CanBridge publishes or leaves out.

Usage::

    python scripts/pin_contract.py --gui-v2 /path/gui-v2.git --modbustcp /path/dbus_modbustcp.git \\
        --systemcalc /path/dbus-systemcalc-py.git --recordings /path/recordings [--out FILE]

Each ``--<source>`` also takes ``GITDIR@COMMIT`` to pin an older commit than HEAD.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "contract" / "pinned.json"

#: the service classes of the contract
CLASSES = ("battery", "vebus")

#: gui-v2 files whose paths belong to a class ("device" = every device's Device info page).
#: A directory prefix takes every .qml file under it.
GUI_FILES = {
    "battery": ("pages/settings/devicelist/battery/",
                "pages/settings/devicelist/delegates/DeviceListDelegate_battery.qml"),
    "vebus": ("pages/vebusdevice/",
              "pages/settings/devicelist/delegates/DeviceListDelegate_vebus.qml",
              "components/listitems/ListCurrentLimitButton.qml",
              "components/listitems/ListInverterChargerModeButton.qml",
              "components/listitems/ListActiveAcInput.qml",
              "components/VeBusAcIODisplay.qml",
              "data/common/AcInputSettingsModel.qml"),
    "device": ("pages/settings/PageDeviceInfo.qml",
               "components/listitems/ListFirmwareVersion.qml"),
}

#: the recordings of real devices (file name -> class)
RECORDINGS = {
    "venus-docker_simulations_lp_bms_a.tsv": "battery",      # Lynx Smart BMS 500
    "dbus-recorder_bms.tsv": "battery",                     # a CAN-bus BMS with /System rows
    "venus-docker_simulations_lpp_vebus.tsv": "vebus",       # MultiPlus-II 12/3000/120-32
}


class Mirror:
    """Read-only access to one commit of a git directory."""

    def __init__(self, spec: str, name: str) -> None:
        gitdir, _, commit = spec.partition("@")
        self.gitdir = gitdir
        self.name = name
        self.commit = self._git("rev-parse", (commit or "HEAD") + "^{commit}").strip()
        self.date = self._git("log", "-1", "--format=%cI", self.commit).strip()

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.gitdir}", *args], check=True,
                              capture_output=True, text=True).stdout

    def files(self, prefix: str) -> list[str]:
        out = self._git("ls-tree", "-r", "--name-only", self.commit, "--", prefix)
        return [f for f in out.splitlines() if f]

    def show(self, path: str) -> str:
        return self._git("show", f"{self.commit}:{path}")

    def source(self) -> dict[str, str]:
        return {"repository": f"https://github.com/victronenergy/{self.name}",
                "commit": self.commit, "date": self.date}


# -- dbus_modbustcp ----------------------------------------------------------------------------

def modbus(m: Mirror) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """attributes.csv rows of the battery and vebus classes, and unitid2di.csv."""
    out: dict[str, dict[str, Any]] = {c: {} for c in CLASSES}
    for row in csv.reader(io.StringIO(m.show("attributes.csv"))):
        if len(row) < 8 or not row[1].startswith("/"):
            continue
        cls = row[0].removeprefix("com.victronenergy.")
        if cls not in out:
            continue
        reg = {"register": int(row[4]), "dbus_type": row[2], "unit": row[3],
               "register_type": row[5], "scale": row[6], "access": row[7]}
        out[cls].setdefault(row[1], []).append(reg)
    units: dict[str, int] = {}
    for row in csv.reader(io.StringIO(m.show("unitid2di.csv"))):
        if len(row) >= 2 and row[0].strip().isdigit() and row[1].strip().isdigit():
            units[row[0].strip()] = int(row[1])
    return out, units


# -- dbus-systemcalc-py --------------------------------------------------------------------------

def _const_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def systemcalc(m: Mirror) -> dict[str, dict[str, list[str]]]:
    """Paths systemcalc monitors per class: the dbus_tree dict of dbus_systemcalc.py and every
    delegate's ``get_input`` tuples ``('com.victronenergy.<class>', ['/Path', ...])``."""
    out: dict[str, dict[str, set[str]]] = {c: {} for c in CLASSES}
    files = ["dbus_systemcalc.py"] + [f for f in m.files("delegates/") if f.endswith(".py")]
    for f in files:
        tree = ast.parse(m.show(f), filename=f)
        for node in ast.walk(tree):
            pairs: list[tuple[str | None, ast.AST]] = []
            if isinstance(node, ast.Dict):
                pairs = [(_const_str(k), v) for k, v in zip(node.keys, node.values, strict=True)
                         if k is not None]
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
                pairs = [(_const_str(node.elts[0]), node.elts[1])]
            for key, value in pairs:
                cls = (key or "").removeprefix("com.victronenergy.")
                if cls not in out:
                    continue
                if isinstance(value, ast.Dict):
                    paths = [_const_str(k) for k in value.keys if k is not None]
                elif isinstance(value, ast.List | ast.Tuple):
                    paths = [_const_str(e) for e in value.elts]
                else:
                    continue
                for p in paths:
                    if p and p.startswith("/"):
                        out[cls].setdefault(p, set()).add(f)
    return {c: {p: sorted(fs) for p, fs in sorted(d.items())} for c, d in out.items()}


# -- gui-v2 --------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_][\w.]*(?:\[[^\]]*\])?)|(\+))')


def _chain(line: str, start: int) -> tuple[str, int]:
    """The string concatenation starting at ``start`` as a pattern: literals kept, every
    non-literal operand as ``*`` (``"/Ac/In/" + n + "/CurrentLimit"`` -> ``/Ac/In/*/CurrentLimit``),
    and where it ends."""
    parts: list[str] = []
    pos = end = start
    want_operand = True
    while True:
        m = _TOKEN.match(line, pos)
        if m is None:
            break
        lit, ident, plus = m.groups()
        if want_operand and (lit is not None or ident is not None):
            parts.append(lit if lit is not None else "*")
            want_operand = False
            end = m.end()
        elif not want_operand and plus:
            want_operand = True
        else:
            break
        pos = m.end()
    return "".join(parts), end


def gui_paths(text: str) -> set[str]:
    """D-Bus path patterns a QML file reads."""
    found: set[str] = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//") or "pushPage" in line:
            continue
        consumed = -1
        for m in re.finditer(r'"(/[A-Z][^"]*)"', line):
            if m.start() < consumed:
                continue  # a later literal of a chain already read
            before = line[:m.start()]
            if re.search(r"pathSuffix\s*:\s*$", before):
                found.add("*" + m.group(1))
            elif re.search(r"\+\s*$", before) or re.search(r"(uid|Uid)\s*:\s*$", before):
                pattern, consumed = _chain(line, m.start())
                found.add(pattern)
    return {p for p in found if p.startswith(("/", "*/"))}


def gui(m: Mirror) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    for cls, specs in GUI_FILES.items():
        files: list[str] = []
        for spec in specs:
            # a file gone from gui-v2 drops out here and shows as a claim the tests refuse
            files += [f for f in m.files(spec) if f.endswith(".qml")]
        dest = out.setdefault(cls, {})
        for f in sorted(set(files)):
            for p in gui_paths(m.show(f)):
                dest.setdefault(p, set()).add(f)
    return {c: {p: sorted(fs) for p, fs in sorted(d.items())} for c, d in out.items()}


# -- recordings ----------------------------------------------------------------------------------

def recording(path: Path) -> dict[str, Any]:
    """The first value of every path in a dbus-recorder TSV: D-Bus type and text."""
    lines = path.read_text(encoding="utf-8").splitlines()
    paths: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if cols and cols[0].isdigit():
            cols = cols[1:]
        if len(cols) < 3 or not cols[0].startswith("/") or cols[0] in paths:
            continue
        valid = cols[1] != "ARRAY" or cols[2] != "[]"
        paths[cols[0]] = {"type": cols[1], "text": cols[3] if len(cols) > 3 and valid else ""}
    return {"service": lines[0].strip(),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "paths": paths}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gui-v2", required=True, help="git dir of victronenergy/gui-v2[@commit]")
    ap.add_argument("--modbustcp", required=True,
                    help="git dir of victronenergy/dbus_modbustcp[@commit]")
    ap.add_argument("--systemcalc", required=True,
                    help="git dir of victronenergy/dbus-systemcalc-py[@commit]")
    ap.add_argument("--recordings", required=True, type=Path,
                    help="directory of the reference recordings (*.tsv)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    gm = Mirror(args.gui_v2, "gui-v2")
    mm = Mirror(args.modbustcp, "dbus_modbustcp")
    sm = Mirror(args.systemcalc, "dbus-systemcalc-py")
    registers, units = modbus(mm)
    pinned = {
        "comment": "Generated by scripts/pin_contract.py; do not edit by hand.",
        "sources": {"gui-v2": gm.source(), "dbus_modbustcp": mm.source(),
                    "dbus-systemcalc-py": sm.source()},
        "modbus": registers,
        "unitid2di": units,
        "systemcalc": systemcalc(sm),
        "gui-v2": gui(gm),
        "recordings": {name: {"class": cls, **recording(args.recordings / name)}
                       for name, cls in RECORDINGS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(pinned, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    print(f"wrote {args.out}: gui-v2 {gm.commit[:12]}, dbus_modbustcp {mm.commit[:12]}, "
          f"dbus-systemcalc-py {sm.commit[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
