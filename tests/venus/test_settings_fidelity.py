"""Fidelity tests for the settings service ``com.victronenergy.settings``.

The same tests run against the project's stand-in (``sim.venus.settings_service``, the default)
and against Victron's real ``localsettings`` (``LOCALSETTINGS=.../localsettings.py
VELIB_PYTHON=.../velib_python``); see ``tests/fixtures/venus.py``. Each test pins one piece of
observable protocol behaviour of the real service, quirks included, talking plain dbus-python
to a private dbus-daemon.

Signals are awaited by iterating the GLib main context with a deadline. "Nothing was sent"
is shown with a barrier: D-Bus delivers one sender's messages in order, so once a later,
expected signal has arrived, an earlier one that was never received was never sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dbus
import dbus.bus
import pytest
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from tests.fixtures.venus import SETTINGS_NAME, SettingsService, wait_for_name

BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.Settings"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
BARRIER = "/Settings/FidelityBarrier/Value"

# AddSetting(s) result codes
OK, UNDERSCORE, UNKNOWN_TYPE, INVALID_PATH, TYPE_DIFFERS = 0, -2, -3, -4, -5
INVALID_DEFAULT, OUT_OF_RANGE, IS_GROUP, NOT_IN_SETTINGS = -6, -7, -8, -9


class Client:
    """A plain dbus-python client of the settings service, recording its signals."""

    def __init__(self, address: str) -> None:
        self.bus = dbus.bus.BusConnection(address, mainloop=DBusGMainLoop())
        self.signals: list[tuple[str, str, tuple[Any, ...]]] = []
        self.bus.add_signal_receiver(
            self._on_signal,
            bus_name=SETTINGS_NAME,
            path_keyword="path",
            member_keyword="member",
        )
        self._barrier_value = 0

    def _on_signal(self, *args: Any, path: str, member: str) -> None:
        self.signals.append((member, str(path), args))

    def close(self) -> None:
        """Close the connection."""
        self.bus.close()

    # calls --------------------------------------------------------------------------------

    def call(self, path: str, method: str, *args: Any, iface: str = BUSITEM, sig: str = "") -> Any:
        """Call ``method`` on ``path`` of the settings service and return the reply."""
        return self.bus.call_blocking(
            SETTINGS_NAME, path, iface, method, sig or None, args, timeout=10
        )

    def add(self, *entries: dict[str, Any], at: str = "/") -> list[dict[str, Any]]:
        """``AddSettings`` with ``entries`` on the object ``at``."""
        arg = dbus.Array([dbus.Dictionary(e, signature="sv") for e in entries], signature="a{sv}")
        return list(self.call(at, "AddSettings", arg, iface=SETTINGS, sig="aa{sv}"))

    def add_one(self, path: str, default: Any, **extra: Any) -> dict[str, Any]:
        """``AddSettings`` with one entry; returns its result and asserts success."""
        (result,) = self.add({"path": path, "default": default, **extra})
        assert result["error"] == OK, result
        return result

    def add_legacy(self, at: str, *args: Any) -> int:
        """``AddSetting(group, name, default, type, min, max)`` on the object ``at``."""
        return int(self.call(at, "AddSetting", *args, iface=SETTINGS, sig="ssvsvv"))

    def get(self, path: str) -> Any:
        """``GetValue``."""
        return self.call(path, "GetValue")

    def text(self, path: str) -> Any:
        """``GetText``."""
        return self.call(path, "GetText")

    def set(self, path: str, value: Any) -> int:
        """``SetValue``; returns the result code."""
        return int(self.call(path, "SetValue", value, sig="v"))

    def remove(self, at: str, *paths: str) -> list[int]:
        """``RemoveSettings``."""
        return [
            int(c) for c in self.call(at, "RemoveSettings", list(paths), iface=SETTINGS, sig="as")
        ]

    def items(self) -> dict[str, dict[str, Any]]:
        """``GetItems`` on ``/``."""
        return {str(k): dict(v) for k, v in self.call("/", "GetItems").items()}

    def error_of(self, fn: Callable[[], Any]) -> str:
        """The D-Bus error name ``fn`` fails with (fails the test if it succeeds)."""
        with pytest.raises(dbus.exceptions.DBusException) as info:
            fn()
        return str(info.value.get_dbus_name())

    # signals ------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run the GLib main context until ``predicate()`` holds (AssertionError on timeout)."""
        ctx = GLib.MainContext.default()
        wake = GLib.timeout_add(20, lambda: True)
        deadline = time.monotonic() + timeout
        try:
            while not predicate():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out; signals so far: {self.signals}")
                ctx.iteration(True)
        finally:
            GLib.source_remove(wake)

    def changes(self, path: str) -> list[dict[str, Any]]:
        """The ``PropertiesChanged`` dictionaries received so far for ``path``."""
        return [dict(a[0]) for m, p, a in self.signals if m == "PropertiesChanged" and p == path]

    def wait_change(self, path: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait for ``count`` ``PropertiesChanged`` on ``path``; return all received for it."""
        self.wait_for(lambda: len(self.changes(path)) >= count)
        return self.changes(path)

    def barrier(self) -> None:
        """Return once every signal the service sent before this call has been received."""
        if self._barrier_value == 0:
            self.add_one(BARRIER, dbus.Int32(0))
        self._barrier_value += 1
        wanted = self._barrier_value
        assert self.set(BARRIER, dbus.Int32(wanted)) == 0
        self.wait_for(lambda: any(c["Value"] == wanted for c in self.changes(BARRIER)))

    def clear(self) -> None:
        """Forget the signals received so far."""
        self.signals.clear()

    def settle(self) -> None:
        """Receive every signal sent so far, then forget them all."""
        self.barrier()
        self.clear()


@pytest.fixture
def client(settings_service: SettingsService) -> Iterator[Client]:
    """A client connected to the bus of the running settings service."""
    c = Client(settings_service.daemon.address)
    try:
        yield c
    finally:
        c.close()


def typed(value: Any, dbus_type: type, expected: Any) -> bool:
    """True when ``value`` has exactly ``dbus_type`` and equals ``expected``."""
    return type(value) is dbus_type and value == expected


def wait_file_contains(file: Path, needle: str, timeout: float = 10.0) -> str:
    """Poll ``file`` until it contains ``needle`` (the service writes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = file.read_text()
        except FileNotFoundError:
            text = ""
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never appeared in {file}:\n{text}")
        time.sleep(0.02)


# --- object paths and interfaces -------------------------------------------------------------


def introspect(c: Client, path: str) -> tuple[dict[str, set[str]], set[str]]:
    """``({interface: {methods and signals}}, {child nodes})`` of ``path``."""
    xml = str(c.call(path, "Introspect", iface="org.freedesktop.DBus.Introspectable"))
    root = ET.fromstring(xml)
    ifaces = {
        i.get("name", ""): {m.get("name", "") for m in i if m.tag in ("method", "signal")}
        for i in root.findall("interface")
    }
    return ifaces, {n.get("name", "") for n in root.findall("node")}


def test_interfaces_on_settings_groups_and_root(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/Number", dbus.Int32(5), min=0, max=10)

    setting, _ = introspect(client, "/Settings/FidelityTest/Number")
    assert {
        "GetValue",
        "GetText",
        "SetValue",
        "GetMin",
        "GetMax",
        "GetDefault",
        "SetDefault",
        "PropertiesChanged",
    } <= setting[BUSITEM]
    assert {"GetSilent", "GetAttributes"} <= setting[SETTINGS]
    assert "GetItems" not in setting[BUSITEM]
    assert "AddSettings" not in setting[SETTINGS]

    for group_path in ("/Settings", "/Settings/FidelityTest"):
        group, _ = introspect(client, group_path)
        assert {"GetValue", "GetText", "SetDefault"} <= group[BUSITEM]
        assert "SetValue" not in group[BUSITEM]
        assert "GetItems" not in group[BUSITEM]
        assert {"AddSetting", "AddSilentSetting", "AddSettings", "RemoveSettings"} <= group[
            SETTINGS
        ]
        assert "GetAttributes" not in group[SETTINGS]

    root, children = introspect(client, "/")
    assert "GetItems" in root[BUSITEM]
    assert {"AddSettings", "RemoveSettings", "AddSetting"} <= root[SETTINGS]
    assert children == {"Settings"}
    _, children = introspect(client, "/Settings")
    assert {"FidelityTest", "Devices"} <= children

    # What is not exported is refused by name.
    n = "/Settings/FidelityTest/Number"
    assert client.error_of(lambda: client.get("/Settings/FidelityTest/Nope")) == UNKNOWN_OBJECT
    assert client.error_of(lambda: client.call("/Settings", "GetItems")) == UNKNOWN_METHOD
    assert client.error_of(lambda: client.set("/Settings/FidelityTest", 1)) == UNKNOWN_METHOD
    assert client.error_of(lambda: client.add({"path": "x", "default": 1}, at=n)) == (
        UNKNOWN_METHOD
    )
    assert (
        client.error_of(lambda: client.call("/Settings", "GetAttributes", iface=SETTINGS))
        == UNKNOWN_METHOD
    )


def test_devices_group_exists_from_the_start(client: Client) -> None:
    assert dict(client.get("/Settings/Devices")) == {}
    assert client.items() == {}


def test_add_methods_take_paths_relative_to_their_object(client: Client) -> None:
    assert client.add_legacy("/Settings", "FidelityTest", "A", dbus.Int32(1), "i", 0, 0) == OK
    assert client.add_legacy("/", "Settings/FidelityTest", "B", dbus.Int32(2), "i", 0, 0) == OK
    assert client.add_legacy("/", "/Settings/FidelityTest", "/C", dbus.Int32(3), "i", 0, 0) == OK
    assert client.add_legacy("/Settings/FidelityTest", "", "D", dbus.Int32(4), "i", 0, 0) == OK
    assert client.add_legacy("/Settings/FidelityTest", "Sub", "E", dbus.Int32(5), "i", 0, 0) == OK
    (r,) = client.add({"path": "F", "default": dbus.Int32(6)}, at="/Settings/FidelityTest")
    assert r["path"] == "F"
    (r,) = client.add({"path": "/G", "default": dbus.Int32(7)}, at="/Settings/FidelityTest")
    assert r["error"] == OK
    values = {k: int(v) for k, v in client.get("/Settings/FidelityTest").items()}
    assert values == {"A": 1, "B": 2, "C": 3, "D": 4, "Sub/E": 5, "F": 6, "G": 7}

    # Through '/', only paths below /Settings/ are accepted.
    assert client.add_legacy("/", "FidelityTest", "X", dbus.Int32(1), "i", 0, 0) == (
        NOT_IN_SETTINGS
    )
    (r,) = client.add({"path": "Settings/FidelityTest/X", "default": dbus.Int32(1)})
    assert r["error"] == NOT_IN_SETTINGS

    assert client.remove("/Settings/FidelityTest", "Sub/E", "/F", "Nope") == [0, 0, -1]
    assert client.remove("/", "Settings/FidelityTest/G") == [0]
    assert set(client.get("/Settings/FidelityTest")) == {"A", "B", "C", "D"}


# --- AddSettings ------------------------------------------------------------------------------


def test_add_settings_type_comes_from_the_dbus_type_of_the_default(client: Client) -> None:
    results = client.add(
        {"path": "/Settings/FidelityTest/Int", "default": dbus.Int32(55), "type": "f"},
        {"path": "/Settings/FidelityTest/Int64", "default": dbus.Int64(7)},
        {"path": "/Settings/FidelityTest/Float", "default": dbus.Double(55.0)},
        {"path": "/Settings/FidelityTest/Str", "default": dbus.String("55")},
    )
    assert [set(r) for r in results] == [{"path", "error", "value"}] * 4
    assert [str(r["path"]) for r in results] == [
        "/Settings/FidelityTest/Int",
        "/Settings/FidelityTest/Int64",
        "/Settings/FidelityTest/Float",
        "/Settings/FidelityTest/Str",
    ]
    assert [r["error"] for r in results] == [0, 0, 0, 0]
    assert typed(results[0]["value"], dbus.Int32, 55)
    assert typed(results[1]["value"], dbus.Int32, 7)
    assert typed(results[2]["value"], dbus.Double, 55.0)
    assert typed(results[3]["value"], dbus.String, "55")

    # The 'type' key is ignored: 55 makes an integer setting for good.
    assert client.set("/Settings/FidelityTest/Int", 55.9) == 0
    assert typed(client.get("/Settings/FidelityTest/Int"), dbus.Int32, 55)
    assert typed(client.get("/Settings/FidelityTest/Int64"), dbus.Int32, 7)
    assert typed(client.get("/Settings/FidelityTest/Float"), dbus.Double, 55.0)
    assert typed(client.get("/Settings/FidelityTest/Str"), dbus.String, "55")


def test_add_settings_refusals_and_their_codes(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/Group/Existing", dbus.Int32(1))
    p = "/Settings/FidelityTest/"
    results = client.add(
        {"path": p + "Bool", "default": dbus.Boolean(True)},
        {"path": p + "Byte", "default": dbus.Byte(1)},
        {"path": p + "Int16", "default": dbus.Int16(1)},
        {"path": p + "UInt32", "default": dbus.UInt32(1)},
        {"path": p + "NoDefault"},
        {"default": dbus.Int32(1)},
        {"path": dbus.Int32(3), "default": dbus.Int32(1)},
        {"path": dbus.ObjectPath(p + "ObjPath"), "default": dbus.Int32(1)},
        {"path": p + "_Hidden", "default": dbus.Int32(1)},
        {"path": "/Elsewhere/X", "default": dbus.Int32(1)},
        {"path": "/Elsewhere/Y", "default": dbus.Int32(11), "min": 0, "max": 10},
        {"path": p + "Group", "default": dbus.Int32(1)},
        {"path": p + "TooBig", "default": dbus.Int32(11), "min": 0, "max": 10},
        {"path": p + "TooSmall", "default": dbus.Double(-0.5), "min": 0.0, "max": 1.0},
        {"path": p + "Inverted", "default": dbus.Int32(7), "min": 10, "max": 5},
        {"path": p + "Group/Existing", "default": dbus.Double(1.0)},
        {"path": p + "Group/Existing", "default": dbus.String("1")},
    )
    codes = [int(r["error"]) for r in results]
    assert codes == [
        UNKNOWN_TYPE, UNKNOWN_TYPE, UNKNOWN_TYPE, UNKNOWN_TYPE, UNKNOWN_TYPE,
        INVALID_PATH, INVALID_PATH, INVALID_PATH,
        UNDERSCORE, NOT_IN_SETTINGS, OUT_OF_RANGE, IS_GROUP, OUT_OF_RANGE, OUT_OF_RANGE,
        OUT_OF_RANGE, TYPE_DIFFERS, TYPE_DIFFERS,
    ]  # fmt: skip
    # A refused entry carries no value; a missing path is not echoed, a non-string one is.
    assert all("value" not in r for r in results)
    assert "path" not in results[5]
    assert typed(results[6]["path"], dbus.Int32, 3)
    assert typed(results[7]["path"], dbus.ObjectPath, p + "ObjPath")
    assert set(client.items()) == {p + "Group/Existing"}
    assert typed(client.get(p + "Group/Existing"), dbus.Int32, 1)


def test_add_setting_legacy_api(client: Client) -> None:
    g = "/Settings"
    assert client.add_legacy(g, "FidelityTest", "I", dbus.Double(1.9), "i", 0, 10) == OK
    assert typed(client.get("/Settings/FidelityTest/I"), dbus.Int32, 1)  # truncated
    assert client.add_legacy(g, "FidelityTest", "B", dbus.Boolean(True), "i", 0, 0) == OK
    assert typed(client.get("/Settings/FidelityTest/B"), dbus.Int32, 1)  # bools pass here
    assert client.add_legacy(g, "FidelityTest", "F", "2.5", "f", "1", "3") == OK
    assert typed(client.get("/Settings/FidelityTest/F"), dbus.Double, 2.5)
    assert typed(client.call("/Settings/FidelityTest/F", "GetMin"), dbus.Double, 1.0)
    assert client.add_legacy(g, "FidelityTest", "S", dbus.Int32(5), "s", 1, 3) == OK
    assert typed(client.get("/Settings/FidelityTest/S"), dbus.String, "5")
    assert client.add_legacy(g, "FidelityTest", "X", dbus.Int32(1), "x", 0, 0) == UNKNOWN_TYPE
    assert client.add_legacy(g, "FidelityTest", "Y", "abc", "i", 0, 0) == INVALID_DEFAULT
    assert client.add_legacy(g, "FidelityTest", "Z", dbus.Int32(5), "i", 6, 9) == OUT_OF_RANGE
    assert client.add_legacy(g, "FidelityTest", "_Z", dbus.Int32(5), "i", 0, 0) == UNDERSCORE
    assert client.add_legacy(g, "FidelityTest", "I", dbus.Int32(5), "f", 0, 0) == TYPE_DIFFERS
    assert set(client.items()) == {f"/Settings/FidelityTest/{n}" for n in "IBFS"}

    assert (
        int(
            client.call(
                "/Settings",
                "AddSilentSetting",
                "FidelityTest",
                "Quiet",
                dbus.Int32(1),
                "i",
                0,
                0,
                iface=SETTINGS,
                sig="ssvsvv",
            )
        )
        == OK
    )
    assert bool(client.call("/Settings/FidelityTest/Quiet", "GetSilent", iface=SETTINGS))
    assert not bool(client.call("/Settings/FidelityTest/I", "GetSilent", iface=SETTINGS))


def test_silent_flag_and_get_attributes(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/Q", dbus.Double(2.5), min=1.0, max=3.0, silent=True)
    client.add_one("/Settings/FidelityTest/N", dbus.Int32(4))
    client.add_one("/Settings/FidelityTest/S", dbus.String("x"))
    q = client.call("/Settings/FidelityTest/Q", "GetAttributes", iface=SETTINGS)
    assert typed(q[0], dbus.Double, 2.5)
    assert typed(q[1], dbus.Double, 1.0)
    assert typed(q[2], dbus.Double, 3.0)
    assert typed(q[3], dbus.Int32, 1)
    n = client.call("/Settings/FidelityTest/N", "GetAttributes", iface=SETTINGS)
    assert [type(v) for v in n] == [dbus.Int32] * 4
    assert list(n) == [4, 0, 0, 0]
    s = client.call("/Settings/FidelityTest/S", "GetAttributes", iface=SETTINGS)
    assert typed(s[0], dbus.String, "x")
    assert typed(s[1], dbus.Int32, 0) and typed(s[2], dbus.Int32, 0)
    assert typed(
        client.call("/Settings/FidelityTest/Q", "GetSilent", iface=SETTINGS), dbus.Boolean, True
    )


def test_min_max_zero_means_unbounded(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=0, max=0)
    client.add_one(p + "F", dbus.Double(-5.0), min=0.0, max=0.0)
    client.add_one(p + "MinOnly", dbus.Int32(5), min=1)
    assert client.set(p + "I", -100000) == 0
    assert client.set(p + "I", 10**6) == 0
    assert client.set(p + "F", -1e9) == 0
    for path in (p + "I", p + "F"):
        # no limit reads as int32 0, whatever the setting's type
        assert typed(client.call(path, "GetMin"), dbus.Int32, 0)
        assert typed(client.call(path, "GetMax"), dbus.Int32, 0)
    assert client.set(p + "MinOnly", 0) == -1
    assert client.set(p + "MinOnly", 10**6) == 0
    assert typed(client.call(p + "MinOnly", "GetMin"), dbus.Int32, 1)
    assert typed(client.call(p + "MinOnly", "GetMax"), dbus.Int32, 0)


def test_limits_are_converted_to_the_setting_type(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "F", dbus.Double(5.0), min=dbus.Int32(0), max=dbus.Int32(10))
    assert typed(client.call(p + "F", "GetMin"), dbus.Double, 0.0)
    assert typed(client.call(p + "F", "GetMax"), dbus.Double, 10.0)
    client.add_one(p + "I", dbus.Int32(5), min=dbus.Double(1.7), max=dbus.String("7"))
    assert typed(client.call(p + "I", "GetMin"), dbus.Int32, 1)
    assert typed(client.call(p + "I", "GetMax"), dbus.Int32, 7)
    client.add_one(p + "J", dbus.Int32(5), min=dbus.String("abc"), max=dbus.Int32(7))
    assert typed(client.call(p + "J", "GetMin"), dbus.Int32, 0)  # unconvertible: no limit
    assert client.set(p + "J", -50) == 0
    assert client.set(p + "J", 8) == -1
    client.add_one(p + "S", dbus.String("x"), min=dbus.Int32(3), max=dbus.Int32(4))
    assert "Min" not in client.items()[p + "S"]  # strings have no limits


def test_integer_beyond_int32(client: Client) -> None:
    # The value is stored and read back as int64, but the change signal cannot carry it, so
    # the call that stored it fails. Settings must stay within int32.
    name = client.error_of(
        lambda: client.add({"path": "/Settings/FidelityTest/Big", "default": dbus.Int64(2**40)})
    )
    assert name == "org.freedesktop.DBus.Python.OverflowError"
    assert typed(client.get("/Settings/FidelityTest/Big"), dbus.Int64, 2**40)


def test_setting_below_a_setting_fails(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/Leaf", dbus.Int32(1))
    client.error_of(
        lambda: client.add({"path": "/Settings/FidelityTest/Leaf/Sub", "default": dbus.Int32(1)})
    )
    assert set(client.items()) == {"/Settings/FidelityTest/Leaf"}


# --- reading and writing values ---------------------------------------------------------------


def test_set_value_converts_like_python(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=-100, max=100)
    cases_i = [
        (dbus.Double(56.7), 0, 56),  # truncated, not rounded
        (dbus.Double(-56.7), 0, -56),  # towards zero
        ("42", 0, 42),  # numeric strings are parsed
        (" 43 ", 0, 43),
        ("42.5", -1, 43),  # but not as floats
        ("abc", -1, 43),
        (dbus.Boolean(True), 0, 1),  # SetValue accepts a bool, AddSettings does not
        (dbus.Int64(99), 0, 99),
        (dbus.Byte(7), 0, 7),
        (dbus.Array([1], signature="i"), -1, 7),
        (dbus.Int32(101), -1, 7),  # out of range
        (dbus.Double(-100.9), 0, -100),  # in range after truncation
    ]
    for raw, code, after in cases_i:
        assert (client.set(p + "I", raw), client.get(p + "I")) == (code, after), raw
        assert type(client.get(p + "I")) is dbus.Int32

    client.add_one(p + "F", dbus.Double(1.0), min=0.0, max=10.0)
    cases_f: list[tuple[Any, int, float]] = [
        ("2.5", 0, 2.5),
        (dbus.Int32(3), 0, 3.0),
        ("abc", -1, 3.0),
        (dbus.Double(10.5), -1, 3.0),
        ("1e1", 0, 10.0),
    ]
    for raw, code, want in cases_f:
        assert (client.set(p + "F", raw), client.get(p + "F")) == (code, want), raw
        assert type(client.get(p + "F")) is dbus.Double

    client.add_one(p + "S", dbus.String("x"))
    cases_s: list[tuple[Any, str]] = [(dbus.Int32(5), "5"), (dbus.Double(1.5), "1.5"), ("", "")]
    for raw, text in cases_s:
        assert client.set(p + "S", raw) == 0
        assert typed(client.get(p + "S"), dbus.String, text)
    code = client.call(p + "S", "SetValue", "y", sig="v")
    assert typed(code, dbus.Int32, 0)


def test_get_text(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(7))
    client.add_one(p + "F", dbus.Double(3.0))
    client.add_one(p + "G", dbus.Double(0.1))
    client.add_one(p + "S", dbus.String("hello"))
    assert [str(client.text(p + n)) for n in "IFGS"] == ["7", "3.0", "0.1", "hello"]
    assert type(client.text(p + "I")) is dbus.String


def test_min_max_default_and_set_default(client: Client) -> None:
    p = "/Settings/FidelityTest/I"
    client.add_one(p, dbus.Int32(5), min=1, max=9)
    assert typed(client.call(p, "GetMin"), dbus.Int32, 1)
    assert typed(client.call(p, "GetMax"), dbus.Int32, 9)
    assert typed(client.call(p, "GetDefault"), dbus.Int32, 5)
    assert client.set(p, 8) == 0
    client.settle()
    assert typed(client.call(p, "SetDefault"), dbus.Int32, 0)
    assert typed(client.get(p), dbus.Int32, 5)
    (change,) = client.wait_change(p)
    assert change == {"Value": 5, "Text": "5"}


def test_set_default_on_a_group_fails(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/I", dbus.Int32(5))
    assert client.set("/Settings/FidelityTest/I", 6) == 0
    client.error_of(lambda: client.call("/Settings/FidelityTest", "SetDefault"))
    assert client.get("/Settings/FidelityTest/I") == 6


def test_get_items(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=0, max=10)
    client.add_one(p + "F", dbus.Double(1.5))
    client.add_one(p + "S", dbus.String("x"))
    items = client.items()
    assert set(items) == {p + "I", p + "F", p + "S"}
    i = items[p + "I"]
    assert set(i) == {"Value", "Text", "Min", "Max", "Default"}
    assert typed(i["Value"], dbus.Int32, 5) and typed(i["Text"], dbus.String, "5")
    assert typed(i["Min"], dbus.Int32, 0) and typed(i["Max"], dbus.Int32, 10)
    assert typed(i["Default"], dbus.Int32, 5)
    # Without limits there are no Min/Max entries (not even for floats).
    assert items[p + "F"] == {"Value": 1.5, "Text": "1.5", "Default": 1.5}
    assert type(items[p + "F"]["Value"]) is dbus.Double
    assert items[p + "S"] == {"Value": "x", "Text": "x", "Default": "x"}


def test_group_get_value_and_get_text(client: Client) -> None:
    client.add_one("/Settings/FidelityTest/A/I", dbus.Int32(5))
    client.add_one("/Settings/FidelityTest/A/S", dbus.String("x"))
    client.add_one("/Settings/FidelityTest/F", dbus.Double(1.5))
    group = client.get("/Settings/FidelityTest")
    assert isinstance(group, dbus.Dictionary) and group.signature == "sv"
    assert dict(group) == {"A/I": 5, "A/S": "x", "F": 1.5}
    assert type(group["A/I"]) is dbus.Int32 and type(group["F"]) is dbus.Double
    assert dict(client.get("/Settings/FidelityTest/A")) == {"I": 5, "S": "x"}
    root = client.get("/")
    assert dict(root) == {
        "Settings/FidelityTest/A/I": 5,
        "Settings/FidelityTest/A/S": "x",
        "Settings/FidelityTest/F": 1.5,
    }
    text = client.text("/Settings/FidelityTest")
    assert isinstance(text, dbus.Dictionary) and text.signature == "ss"
    assert dict(text) == {"A/I": "5", "A/S": "x", "F": "1.5"}


# --- signals ------------------------------------------------------------------------------------


def test_properties_changed_on_set_value(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=0, max=100)
    client.add_one(p + "F", dbus.Double(1.0))
    client.add_one(p + "S", dbus.String("x"))
    client.settle()

    assert client.set(p + "I", 7) == 0
    assert client.set(p + "F", 2) == 0
    assert client.set(p + "S", "y") == 0
    (ci,) = client.wait_change(p + "I")
    (cf,) = client.wait_change(p + "F")
    (cs,) = client.wait_change(p + "S")
    assert ci == {"Value": 7, "Text": "7"}
    assert typed(ci["Value"], dbus.Int32, 7) and typed(ci["Text"], dbus.String, "7")
    assert cf == {"Value": 2.0, "Text": "2.0"} and type(cf["Value"]) is dbus.Double
    assert cs == {"Value": "y", "Text": "y"}

    # Unchanged, refused and unconvertible writes send nothing; no ItemsChanged ever.
    client.settle()
    assert client.set(p + "I", 7) == 0
    assert client.set(p + "I", "7") == 0
    assert client.set(p + "I", 7.9) == 0
    assert client.set(p + "I", 1000) == -1
    assert client.set(p + "S", "y") == 0
    client.barrier()
    assert [s for s in client.signals if s[1] != BARRIER] == []
    assert not any(m == "ItemsChanged" for m, _, _ in client.signals)


def test_properties_changed_on_add(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=1, max=9)
    client.add_one(p + "F", dbus.Double(1.5))
    client.add_one(p + "S", dbus.String("x"))
    (ci,) = client.wait_change(p + "I")
    (cf,) = client.wait_change(p + "F")
    (cs,) = client.wait_change(p + "S")
    assert ci == {"Value": 5, "Text": "5", "Default": 5, "Min": 1, "Max": 9}
    assert all(type(ci[k]) is dbus.Int32 for k in ("Value", "Default", "Min", "Max"))
    # Unbounded limits are sent as int32 0; strings get no Min/Max at all.
    assert cf == {"Value": 1.5, "Text": "1.5", "Default": 1.5, "Min": 0, "Max": 0}
    assert type(cf["Min"]) is dbus.Int32 and type(cf["Default"]) is dbus.Double
    assert cs == {"Value": "x", "Text": "x", "Default": "x"}
    assert not any(m == "ItemsChanged" for m, _, _ in client.signals)


def test_readd_keeps_value_and_updates_attributes(client: Client) -> None:
    p = "/Settings/FidelityTest/I"
    client.add_one(p, dbus.Int32(5), min=0, max=100)
    assert client.set(p, 70) == 0
    client.settle()

    # Same definition again: nothing changes, nothing is sent.
    r = client.add_one(p, dbus.Int32(5), min=0, max=100)
    assert typed(r["value"], dbus.Int32, 70)
    client.barrier()
    assert client.changes(p) == []

    # New default and range: the value stays, even outside the new range.
    r = client.add_one(p, dbus.Int32(2), min=0, max=50)
    assert typed(r["value"], dbus.Int32, 70)
    assert client.get(p) == 70
    assert (client.call(p, "GetDefault"), client.call(p, "GetMin"), client.call(p, "GetMax")) == (
        2,
        0,
        50,
    )
    (change,) = client.wait_change(p)
    assert change == {"Value": 70, "Text": "70", "Default": 2, "Min": 0, "Max": 50}
    assert client.set(p, 60) == -1  # the new range applies to writes

    # Only the silent flag changes: also an update, with a signal.
    client.settle()
    client.add_one(p, dbus.Int32(2), min=0, max=50, silent=True)
    (change,) = client.wait_change(p)
    assert change["Value"] == 70
    assert bool(client.call(p, "GetSilent", iface=SETTINGS))

    # A string setting's update carries no Min/Max.
    client.add_one("/Settings/FidelityTest/S", dbus.String("a"))
    assert client.set("/Settings/FidelityTest/S", "b") == 0
    client.settle()
    r = client.add_one("/Settings/FidelityTest/S", dbus.String("c"))
    assert r["value"] == "b"
    (change,) = client.wait_change("/Settings/FidelityTest/S")
    assert change == {"Value": "b", "Text": "b", "Default": "c"}


def test_remove_settings(client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "Keep", dbus.Int32(1))
    client.add_one(p + "Sub/Gone", dbus.Int32(2))
    client.add_one(p + "Sub/Deeper/AlsoGone", dbus.Int32(3))
    client.settle()
    codes = client.call(
        "/",
        "RemoveSettings",
        [p + "Sub/Gone", p + "Nope", "/Settings/Nope/X", p + "Sub"],
        iface=SETTINGS,
        sig="as",
    )
    assert list(codes) == [0, -1, -1, -1]  # a group is not a setting
    assert all(type(c) is dbus.Int32 for c in codes)
    (change,) = client.wait_change(p + "Sub/Gone")
    assert set(change) == {"Value", "Text"}
    assert change["Text"] == ""
    assert isinstance(change["Value"], dbus.Array) and len(change["Value"]) == 0
    assert change["Value"].signature == "i"
    assert client.error_of(lambda: client.get(p + "Sub/Gone")) == UNKNOWN_OBJECT

    # Groups left empty disappear with their last setting.
    assert client.remove("/Settings/FidelityTest", "Sub/Deeper/AlsoGone") == [0]
    assert client.error_of(lambda: client.get(p + "Sub/Deeper")) == UNKNOWN_OBJECT
    assert client.error_of(lambda: client.get(p + "Sub")) == UNKNOWN_OBJECT
    assert set(client.items()) == {p + "Keep", BARRIER}
    assert client.remove("/Settings", "FidelityTest/Keep", BARRIER[10:]) == [0, 0]
    assert client.error_of(lambda: client.get("/Settings/FidelityTest")) == UNKNOWN_OBJECT
    assert dict(client.get("/Settings")) == {}  # /Settings and /Settings/Devices remain
    assert dict(client.get("/Settings/Devices")) == {}

    # A removed setting can be added again, from its new default.
    client.add_one(p + "Keep", dbus.Int32(9))
    assert client.get(p + "Keep") == 9


# --- ClassAndVrmInstance ------------------------------------------------------------------------

DEV = "/Settings/Devices/{}/ClassAndVrmInstance"


def test_class_and_vrm_instance_moves_to_the_next_free_instance_on_add(client: Client) -> None:
    results = client.add(
        {"path": DEV.format("a"), "default": "battery:512"},
        {"path": DEV.format("b"), "default": "battery:512"},
        {"path": DEV.format("c"), "default": "battery:512"},
        {"path": DEV.format("v"), "default": "vebus:512"},  # other classes do not clash
        {"path": DEV.format("z"), "default": "battery:00002"},
    )
    assert [int(r["error"]) for r in results] == [0] * 5
    assert [str(r["value"]) for r in results] == [
        "battery:512", "battery:513", "battery:514", "vebus:512", "battery:2",
    ]  # fmt: skip
    assert [str(client.get(DEV.format(u))) for u in "abcvz"] == [str(r["value"]) for r in results]
    # The default is what was asked for, not the instance given.
    assert client.call(DEV.format("b"), "GetDefault") == "battery:512"
    assert client.call(DEV.format("z"), "GetDefault") == "battery:00002"
    (change,) = client.wait_change(DEV.format("b"))
    assert change == {"Value": "battery:513", "Text": "battery:513", "Default": "battery:512"}

    # Free instances below the taken ones are used; gaps are filled.
    assert client.remove("/Settings/Devices", "b/ClassAndVrmInstance") == [0]
    (r,) = client.add({"path": DEV.format("d"), "default": "battery:512"})
    assert r["value"] == "battery:513"

    # Only .../Devices/<uid>/ClassAndVrmInstance is special.
    r = client.add_one("/Settings/Elsewhere/ClassAndVrmInstance", "battery:512")
    assert r["value"] == "battery:512"


def test_class_and_vrm_instance_on_set_value(client: Client) -> None:
    client.add(
        {"path": DEV.format("a"), "default": "battery:512"},
        {"path": DEV.format("b"), "default": "battery:513"},
        {"path": DEV.format("c"), "default": "battery:515"},
    )
    client.settle()
    b = DEV.format("b")

    # Asking for a taken instance succeeds, and gives the next free one.
    assert client.set(DEV.format("c"), "battery:512") == 0
    assert client.get(DEV.format("c")) == "battery:514"
    (change,) = client.wait_change(DEV.format("c"))
    assert change == {"Value": "battery:514", "Text": "battery:514"}

    # When that is where it already is, the "change" is still announced.
    assert client.set(b, "battery:512") == 0
    assert client.get(b) == "battery:513"
    (change,) = client.wait_change(b)
    assert change == {"Value": "battery:513", "Text": "battery:513"}

    # Writing the current value is no change; another class is free.
    client.settle()
    assert client.set(b, "battery:513") == 0
    assert client.set(b, "tank:512") == 0
    assert client.get(b) == "tank:512"
    client.barrier()
    assert client.changes(b) == [{"Value": "tank:512", "Text": "tank:512"}]
    assert client.call(b, "GetDefault") == "battery:513"

    # Anything but class:integer is refused.
    for bad in ("battery", "battery:1:2", "battery:1.5", "battery:x", dbus.Int32(5)):
        assert client.set(b, bad) == -1, bad
    assert client.get(b) == "tank:512"


def test_class_and_vrm_instance_defaults(client: Client) -> None:
    client.add_one(DEV.format("a"), "battery:512")
    client.add_one(DEV.format("b"), "battery:512")
    # An invalid default: refused for a new setting (which is not created) ...
    (r,) = client.add({"path": DEV.format("q"), "default": "battery:3.5"})
    assert (int(r["error"]), "value" in r) == (INVALID_DEFAULT, False)
    assert client.error_of(lambda: client.get(DEV.format("q"))) == UNKNOWN_OBJECT
    (r,) = client.add({"path": DEV.format("n"), "default": dbus.Int32(5)})
    assert int(r["error"]) == INVALID_DEFAULT
    # ... and for an existing one, whose value is reported.
    (r,) = client.add({"path": DEV.format("b"), "default": "battery"})
    assert (int(r["error"]), r["value"]) == (INVALID_DEFAULT, "battery:513")

    # Re-adding with another class updates the default only.
    r = client.add_one(DEV.format("b"), "tank:1")
    assert r["value"] == "battery:513"
    assert client.call(DEV.format("b"), "GetDefault") == "tank:1"

    # SetDefault is not available on an instance.
    client.error_of(lambda: client.call(DEV.format("b"), "SetDefault"))
    assert client.get(DEV.format("b")) == "battery:513"


# --- persistence -------------------------------------------------------------------------------


def test_values_and_attributes_survive_a_restart(
    settings_service: SettingsService, client: Client
) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=0, max=100)
    client.add_one(p + "F", dbus.Double(1.5), silent=True)
    client.add_one(p + "S", dbus.String("x"))
    client.add_one(p + "1/Digit", dbus.Int32(1))
    client.add(
        {"path": DEV.format("a"), "default": "battery:512"},
        {"path": DEV.format("b"), "default": "battery:512"},
    )
    assert client.set(p + "I", 42) == 0
    assert client.set(p + "F", 2.25) == 0
    assert client.set(p + "S", "hello world") == 0
    before = client.items()

    settings_service.restart()

    assert client.items() == before
    assert client.get(p + "I") == 42
    assert client.call(p + "I", "GetAttributes", iface=SETTINGS) == (5, 0, 100, 0)
    assert bool(client.call(p + "F", "GetSilent", iface=SETTINGS))
    assert client.get(p + "1/Digit") == 1
    # Instances stay unique after loading.
    assert client.set(DEV.format("a"), "battery:513") == 0
    assert client.get(DEV.format("a")) == "battery:514"


def test_value_survives_sigkill_once_written(
    settings_service: SettingsService, client: Client
) -> None:
    p = "/Settings/FidelityTest/I"
    client.add_one(p, dbus.Int32(5))
    assert client.set(p, 4242) == 0
    wait_file_contains(settings_service.settings_file, ">4242<")
    settings_service.stop(kill=True)
    settings_service.start()
    assert client.get(p) == 4242
    assert not list(settings_service.datadir.glob("*.new"))


def test_pending_changes_are_written_on_sigterm(settings_service: SettingsService) -> None:
    # Without --no-delay writes are debounced; SIGTERM must still flush them.
    settings_service.stop()
    cmd = [a for a in settings_service.command() if a != "--no-delay"]
    proc = subprocess.Popen(
        cmd,
        env=settings_service.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    c = Client(settings_service.daemon.address)
    try:
        wait_for_name(settings_service.daemon.address, SETTINGS_NAME, 15)
        c.add_one("/Settings/FidelityTest/I", dbus.Int32(5))
        assert c.set("/Settings/FidelityTest/I", 777) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    root = ET.parse(settings_service.settings_file).getroot()
    assert root.findtext("FidelityTest/I") == "777"


def test_settings_file_format(settings_service: SettingsService, client: Client) -> None:
    p = "/Settings/FidelityTest/"
    client.add_one(p + "I", dbus.Int32(5), min=0, max=100)
    client.add_one(p + "F", dbus.Double(1.5), silent=True)
    client.add_one(p + "S", dbus.String("x"))
    client.add_one(p + "7/N", dbus.Int32(1))
    assert client.set(p + "S", "last") == 0
    wait_file_contains(settings_service.settings_file, ">last<")

    raw = settings_service.settings_file.read_bytes()
    assert raw.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = ET.fromstring(raw)
    assert root.tag == "Settings"
    assert root.get("version") == "19"
    group = root.find("FidelityTest")
    assert group is not None and group.get("type") is None
    i, f, s = group.find("I"), group.find("F"), group.find("S")
    assert i is not None and f is not None and s is not None
    assert (i.attrib, i.text) == (
        {"type": "i", "min": "0", "max": "100", "default": "5", "silent": "False"},
        "5",
    )
    assert (f.attrib, f.text) == ({"type": "f", "default": "1.5", "silent": "True"}, "1.5")
    assert (s.attrib, s.text) == ({"type": "s", "default": "x", "silent": "False"}, "last")
    assert group.findtext("_7/N") == "1"  # XML names cannot start with a digit
    assert [e.tag for e in group] == sorted(e.tag for e in group)


def test_settings_file_is_loaded_at_start(
    settings_service: SettingsService, client: Client
) -> None:
    settings_service.stop()
    settings_service.settings_file.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<Settings version="19" unique-id="">\n'
        "  <Hand>\n"
        '    <Made type="i" min="0" max="0" default="3" silent="False">4</Made>\n'
        '    <NoDefault type="f" silent="1">2.5</NoDefault>\n'
        "    <_2>\n"
        '      <Name type="s" default="" silent="False"></Name>\n'
        "    </_2>\n"
        "  </Hand>\n"
        "  <Devices>\n"
        "    <x>\n"
        '      <ClassAndVrmInstance type="s" default="battery:1" silent="False">battery:1'
        "</ClassAndVrmInstance>\n"
        "    </x>\n"
        "  </Devices>\n"
        "</Settings>\n"
    )
    settings_service.start()
    items = client.items()
    made, nodef, name = "/Settings/Hand/Made", "/Settings/Hand/NoDefault", "/Settings/Hand/2/Name"
    assert set(items) == {made, nodef, name, DEV.format("x")}
    # Limits are taken as written: min = max = 0 in the file is the range [0, 0].
    assert items[made] == {"Value": 4, "Text": "4", "Min": 0, "Max": 0, "Default": 3}
    assert client.set(made, 1) == -1
    assert items[nodef] == {"Value": 2.5, "Text": "2.5"}
    assert bool(client.call(nodef, "GetSilent", iface=SETTINGS))
    assert typed(client.call(nodef, "GetDefault"), dbus.Int32, -1)
    assert typed(client.call(nodef, "SetDefault"), dbus.Int32, -1)
    assert items[name] == {"Value": "", "Text": "", "Default": ""}
    (r,) = client.add({"path": DEV.format("y"), "default": "battery:1"})
    assert r["value"] == "battery:2"


def test_corrupt_settings_file_starts_empty(
    settings_service: SettingsService, client: Client
) -> None:
    client.add_one("/Settings/FidelityTest/I", dbus.Int32(5))
    settings_service.stop()
    garbage = b"<Settings><FidelityTest><I type='i'>5</I></Fidel"
    settings_service.settings_file.write_bytes(garbage)

    settings_service.start()
    assert client.items() == {}
    assert dict(client.get("/Settings/Devices")) == {}
    ET.parse(settings_service.settings_file)  # replaced by a valid (empty) file
    client.add_one("/Settings/FidelityTest/I", dbus.Int32(6))
    assert client.get("/Settings/FidelityTest/I") == 6
    if not settings_service.real:
        # The stand-in keeps the unreadable file for inspection; localsettings deletes it.
        kept = settings_service.settings_file.with_name("settings.xml.corrupt")
        assert kept.read_bytes() == garbage


def test_seed_is_used_only_without_a_settings_file(
    settings_service: SettingsService, client: Client, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.xml"
    seed.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<Settings version="1.0">\n'
        "  <Fronius>\n"
        '    <PortNumber default="80" type="i" silent="False">8080</PortNumber>\n'
        "  </Fronius>\n"
        "</Settings>\n"
    )
    settings_service.stop()
    settings_service.settings_file.unlink()
    settings_service.seed = seed
    settings_service.start()
    assert client.get("/Settings/Fronius/PortNumber") == 8080
    assert client.call("/Settings/Fronius/PortNumber", "GetDefault") == 80
    assert client.set("/Settings/Fronius/PortNumber", 81) == 0
    wait_file_contains(settings_service.settings_file, ">81<")

    settings_service.restart()  # settings.xml exists now: the seed is not read again
    assert client.get("/Settings/Fronius/PortNumber") == 81
    assert ">8080<" in seed.read_text()


def test_service_uses_the_session_bus_from_the_environment(
    settings_service: SettingsService,
) -> None:
    # The fixture's daemon is the only bus the service was given; the name is there.
    bus = dbus.bus.BusConnection(settings_service.daemon.address)
    try:
        assert bus.name_has_owner(SETTINGS_NAME)
        pid = int(
            bus.call_blocking(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetConnectionUnixProcessID",
                "s",
                (SETTINGS_NAME,),
            )
        )
        assert settings_service.proc is not None and pid == settings_service.proc.pid
    finally:
        bus.close()
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == settings_service.daemon.address
