"""The running services against the path contract (docs/contract/{battery,vebus}.json).

Real processes on a private dbus-daemon with the simulated hardware (the fixtures of
tests/superb and tests/sma): every contract path of a service's scope is there, with the
contract's D-Bus type and text format when valid, valid where the contract says a healthy
system has it, writeable exactly where the contract says so; and the services publish nothing
outside the contract but their custom ``/CanBridge/*``-style paths.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import dbus

from tests.sma.conftest import VEBUS, SmaSystem, sma  # noqa: F401 - fixture
from tests.superb.conftest import (  # noqa: F401 - fixtures
    AGGREGATE,
    System,
    battery_service,
    superb,
    superb_settings,
)

ROOT = Path(__file__).resolve().parent.parent
BUSITEM = "com.victronenergy.BusItem"


def contract(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "docs" / "contract" / f"{name}.json").read_text("utf-8")))


PINNED = contract("pinned")


def items(bus: Any, service: str) -> dict[str, tuple[Any, str]]:
    raw = bus.get_object(service, "/", introspect=False).GetItems(dbus_interface=BUSITEM)
    return {str(k): (v["Value"], str(v["Text"])) for k, v in raw.items()}


def is_valid(v: Any) -> bool:
    return not (isinstance(v, dbus.Array) and len(v) == 0)


def dbus_kind(v: Any) -> str:
    if isinstance(v, dbus.Double):
        return "d"
    if isinstance(v, dbus.String):
        return "s"
    if isinstance(v, dbus.Int16 | dbus.Int32 | dbus.Int64 | dbus.UInt16 | dbus.UInt32 |
                  dbus.UInt64 | dbus.Byte):
        return "i"
    return type(v).__name__


def expected_text(fmt: Any, v: Any) -> str:
    if isinstance(fmt, dict):
        return str(fmt.get(str(int(v)), int(v)))
    if fmt == "str":
        return str(int(v)) if dbus_kind(v) == "i" else str(v)
    out = str(fmt).format(float(v) if dbus_kind(v) == "d" else int(v))
    # like mk2-dbus, a value that rounds to zero is not shown as "-0.0"
    return out[1:] if re.match(r"-0(\.0*)?[^\d.]", out) else out


def string_capacity(cls: str, path: str) -> int | None:
    """Characters a Modbus string register of the path holds (string[N]: N registers)."""
    for reg in PINNED["modbus"][cls].get(path, []):
        m = re.fullmatch(r"string\[(\d+)\]", reg["register_type"])
        if m:
            return 2 * int(m.group(1))
    return None


def check(cls: str, scope: str, got: dict[str, tuple[Any, str]],
          absent_scopes: tuple[str, ...] = ()) -> list[str]:
    c = contract(cls)
    errors = []
    for path, entry in c["paths"].items():
        if scope not in entry["scope"]:
            if any(s in entry["scope"] for s in absent_scopes) and path in got:
                errors.append(f"{path}: published, but not in scope {scope}")
            continue
        if path not in got:
            if not entry.get("optional"):
                errors.append(f"{path}: missing")
            continue
        value, text = got[path]
        if not is_valid(value):
            if scope in entry["valid"]:
                errors.append(f"{path}: invalid")
            elif text != "---":
                errors.append(f"{path}: invalid with text {text!r}")
            continue
        if dbus_kind(value) != entry["type"]:
            errors.append(f"{path}: {dbus_kind(value)} {value!r}, contract {entry['type']}")
            continue
        want = expected_text(entry["text"], value)
        if text != want:
            errors.append(f"{path}: text {text!r}, contract {want!r}")
        cap = string_capacity(cls, path)
        if cap is not None and len(str(value)) > cap:
            errors.append(f"{path}: {str(value)!r} longer than its Modbus register ({cap})")
    custom = tuple(c["custom_prefixes"])
    extra = [p for p in got if p not in c["paths"] and not p.startswith(custom)]
    if extra:
        errors.append(f"published outside the contract: {sorted(extra)}")
    return errors


def wait_valid(bus: Any, service: str, cls: str, scope: str,
               timeout: float = 20.0) -> dict[str, tuple[Any, str]]:
    """GetItems once every path the contract says is valid in this scope is valid."""
    want = [p for p, e in contract(cls)["paths"].items() if scope in e["valid"]]
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = items(bus, service)
            if all(p in got and is_valid(got[p][0]) for p in want):
                return got
        except dbus.exceptions.DBusException:
            got = {}
        if time.monotonic() > deadline:
            return got  # check() names what is missing
        time.sleep(0.2)


def check_writes(bus: Any, service: str, cls: str, scope: str,
                 got: dict[str, tuple[Any, str]]) -> list[str]:
    """SetValue is refused on every path the contract does not call writeable."""
    errors = []
    for path, entry in contract(cls)["paths"].items():
        if scope not in entry["scope"] or path not in got or entry.get("writeable"):
            continue
        value = got[path][0]
        probe = value if is_valid(value) else dbus.Int32(1)
        obj = bus.get_object(service, path, introspect=False)
        if int(obj.SetValue(probe, dbus_interface=BUSITEM)) == 0:
            errors.append(f"{path}: SetValue accepted on a read-only path")
    return errors


def test_battery_services_follow_the_contract(superb: System) -> None:  # noqa: F811
    sim = superb.start_sim("--nodes", "1,2,3")
    sim.cmd("set 2 cycles 25")
    superb.start_driver()
    c = superb.client
    bus = c.bus
    # three batteries: whatever Mode says, the aggregate is the one BMS (docs/superb.md) and
    # the batteries carry no BMS limits
    c.wait("batteries", lambda: all(c.has(battery_service(n)) for n in (1, 2, 3)), 20)
    c.wait("aggregate", lambda: c.has(AGGREGATE), 10)
    agg = wait_valid(bus, AGGREGATE, "battery", "aggregate")
    errors = check("battery", "aggregate", agg)
    for n in (1, 2, 3):
        one = wait_valid(bus, battery_service(n), "battery", "battery")
        errors += [f"node {n}: {e}" for e in
                   check("battery", "battery", one, absent_scopes=("battery-individual",))]
    errors += check_writes(bus, AGGREGATE, "battery", "aggregate", agg)
    # one battery in individual mode: that battery is the BMS, with its own limits
    assert c.setting("NodeIds", "1") == 0
    c.wait("aggregate gone", lambda: not c.has(AGGREGATE), 10)
    c.wait("CVL on battery 1",
           lambda: "/Info/MaxChargeVoltage" in items(bus, battery_service(1)), 10)
    got = wait_valid(bus, battery_service(1), "battery", "battery")
    errors += check("battery", "battery", got)
    errors += check("battery", "battery-individual", got)
    assert not errors, "\n".join(errors)
    assert "Traceback" not in superb.driver.output


def test_vebus_service_follows_the_contract(sma: SmaSystem) -> None:  # noqa: F811
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 10)
    bus = sma.dbus()
    got = wait_valid(bus, VEBUS, "vebus", "vebus")
    errors = check("vebus", "vebus", got)
    errors += check_writes(bus, VEBUS, "vebus", "vebus", got)
    assert not errors, "\n".join(errors)
    assert "Traceback" not in sma.bridge.output


def test_the_demo_follows_the_contract() -> None:
    """``make demo`` (sim.demo): its aggregate battery, batteries and Sunny Island."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sim.demo", "--duration", "90",
                             "--web-port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    bus = None
    try:
        assert proc.stdout is not None
        address = ""
        deadline = time.monotonic() + 60
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("DBUS_SESSION_BUS_ADDRESS="):
                address = line.split("=", 1)[1].strip()
        assert address, "the demo printed no bus address"
        bus = dbus.bus.BusConnection(address)
        deadline = time.monotonic() + 60
        vebus = ""
        while time.monotonic() < deadline:
            names = [str(n) for n in bus.list_names()]
            vebus = next((n for n in names if n.startswith("com.victronenergy.vebus.")), "")
            if vebus and AGGREGATE in names and battery_service(1) in names:
                break
            time.sleep(0.5)
        errors = check("battery", "aggregate",
                       wait_valid(bus, AGGREGATE, "battery", "aggregate", 45))
        errors += check("battery", "battery",
                        wait_valid(bus, battery_service(1), "battery", "battery", 30),
                        absent_scopes=("battery-individual",))
        errors += check("vebus", "vebus", wait_valid(bus, vebus, "vebus", "vebus", 30))
        assert not errors, "\n".join(errors)
    finally:
        if bus is not None:
            bus.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops its own children
        proc.wait(timeout=60)
