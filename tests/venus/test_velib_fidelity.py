"""Fidelity of velib_python as drivers use it: the same tests pass for the project's stand-in
(``sim/venus/velib_standin``) and for Victron's real velib_python (``VELIB_PYTHON=<checkout>``).

Services under test run either in this process on their own private connection (queried with
asynchronous calls from another connection, so nothing blocks the shared GLib main context) or
in a child process (``velib_service_host.py``) when the code under test makes blocking calls.
Absence of a signal is checked with a sentinel: D-Bus delivers one sender's messages in order,
so once a later signal has arrived, an earlier one would have too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbus
import dbus.bus
import dbus.exceptions
import pytest

from tests.fixtures.velib import Velib, iterate_until
from tests.fixtures.venus import DbusDaemon, SettingsService, wait_for_no_name

BUSITEM = "com.victronenergy.BusItem"
HOST = Path(__file__).with_name("velib_service_host.py")
SVC = "com.victronenergy.battery.fidelity"


class Client:
    """A private connection that queries services with async calls and records their signals."""

    def __init__(self, address: str) -> None:
        self.bus = dbus.bus.BusConnection(address)
        self.signals: list[tuple[str, str, Any]] = []

    def call(self, service: str, path: str, method: str, signature: str = "", *args: Any) -> Any:
        """Call a BusItem method without blocking the main context; return the reply."""
        box: dict[str, Any] = {}
        self.bus.call_async(
            service,
            path,
            BUSITEM,
            method,
            signature,
            args,
            reply_handler=lambda *r: box.setdefault("reply", r),
            error_handler=lambda e: box.setdefault("error", e),
        )
        iterate_until(lambda: box, what=f"{method} on {path}")
        if "error" in box:
            raise box["error"]
        reply = box["reply"]
        return reply[0] if len(reply) == 1 else reply

    def value(self, service: str, path: str) -> Any:
        return self.call(service, path, "GetValue")

    def text(self, service: str, path: str) -> Any:
        return self.call(service, path, "GetText")

    def set(self, service: str, path: str, value: Any) -> int:
        return int(self.call(service, path, "SetValue", "v", value))

    def record(self, service: str) -> None:
        """Start recording PropertiesChanged (any path) and ItemsChanged (on ``/``)."""

        def on_props(changes: Any, path: str = "") -> None:
            self.signals.append(("PropertiesChanged", str(path), changes))

        def on_items(items: Any, path: str = "") -> None:
            self.signals.append(("ItemsChanged", str(path), items))

        self.bus.add_signal_receiver(
            on_props, "PropertiesChanged", BUSITEM, service, path_keyword="path"
        )
        self.bus.add_signal_receiver(
            on_items, "ItemsChanged", BUSITEM, service, path_keyword="path"
        )
        # Make sure the daemon has the match rules before anything is emitted.
        self.bus.call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", []
        )

    def wait_signal(self, name: str, path: str) -> None:
        iterate_until(
            lambda: any(s[0] == name and s[1] == path for s in self.signals),
            what=f"{name} on {path}",
        )


@pytest.fixture
def buses(dbus_daemon: DbusDaemon) -> Iterator[list[dbus.bus.BusConnection]]:
    """Private connections opened by a test; closed at its end."""
    opened: list[dbus.bus.BusConnection] = []
    yield opened
    for bus in opened:
        bus.close()


def private_bus(daemon: DbusDaemon, buses: list[dbus.bus.BusConnection]) -> dbus.bus.BusConnection:
    bus = dbus.bus.BusConnection(daemon.address)
    buses.append(bus)
    return bus


@pytest.fixture
def client(dbus_daemon: DbusDaemon, buses: list[dbus.bus.BusConnection]) -> Client:
    c = Client(dbus_daemon.address)
    buses.append(c.bus)
    return c


def make_service(velib: Velib, bus: dbus.bus.BusConnection, name: str = SVC) -> Any:
    """An in-process service with a typical set of paths, registered two-phase."""
    service = velib.vedbus.VeDbusService(name, bus, register=False)
    service.add_mandatory_paths(
        "fidelity", "1.0", "test", 512, 0xBA77, "Test battery", "v1.0", 2, 1
    )
    service.add_path("/Invalid", None, description="never valid")
    service.add_path("/Int", 40000)
    service.add_path("/Float", 1.5)
    service.add_path("/String", "hello")
    service.add_path("/Dc/0/Voltage", 52.5)
    service.add_path("/Dc/0/Current", None)
    service.register()
    return service


class Host:
    """A VeDbusService in a child process (see ``velib_service_host.py``)."""

    def __init__(self, daemon: DbusDaemon, velib: Velib, name: str, instance: str) -> None:
        self.daemon = daemon
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(HOST), str(velib.path), name, instance],
            env=daemon.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"service host did not start (said {line!r})"

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        wait_for_no_name(self.daemon.address, self.name)


@pytest.fixture
def hosts(dbus_daemon: DbusDaemon) -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        host.stop()


# ---- ve_utils ------------------------------------------------------------------------------


def test_wrap_and_unwrap_conversions(velib: Velib) -> None:
    wrap, unwrap = velib.ve_utils.wrap_dbus_value, velib.ve_utils.unwrap_dbus_value
    invalid = wrap(None)
    assert isinstance(invalid, dbus.Array) and invalid.signature == "i" and len(invalid) == 0
    assert invalid.variant_level == 1
    assert type(wrap(7)) is dbus.Int32
    assert type(wrap(-(2**31))) is dbus.Int32
    assert type(wrap(2**31)) is dbus.Int64
    assert type(wrap(1.5)) is dbus.Double
    assert type(wrap(True)) is dbus.Boolean
    assert type(wrap("x")) is dbus.String
    empty = wrap([])
    assert isinstance(empty, dbus.Array) and empty.signature == "u"
    assert isinstance(wrap({"a": 1}), dbus.Dictionary)
    assert unwrap(dbus.Array([], signature="i")) is None
    assert unwrap(dbus.Array([], signature="u")) is None  # any empty array is "invalid"
    assert type(unwrap(dbus.Int64(5))) is int and unwrap(dbus.Int64(5)) == 5
    assert type(unwrap(dbus.Byte(84))) is int
    assert type(unwrap(dbus.Double(2.5))) is float
    assert unwrap(dbus.Boolean(True)) is True
    assert type(unwrap(dbus.String("s"))) is str
    assert unwrap(wrap({"a": 1, "b": 1.5, "c": "x"})) == {"a": 1, "b": 1.5, "c": "x"}
    assert unwrap(wrap([1, 2.5, "x"])) == [1, 2.5, "x"]
    with pytest.raises(TypeError):  # velib_python cannot wrap a dict holding a list
        wrap({"b": [1.5, "x"]})
    assert unwrap(wrap(None)) is None


# ---- VeDbusService -------------------------------------------------------------------------


def test_invalid_is_empty_ai_and_text_dashes(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    service = make_service(velib, private_bus(dbus_daemon, buses))
    value = client.value(SVC, "/Invalid")
    assert isinstance(value, dbus.Array) and value.signature == "i" and len(value) == 0
    assert client.text(SVC, "/Invalid") == "---"
    assert service["/Invalid"] is None
    assert type(client.value(SVC, "/Int")) is dbus.Int32
    assert client.text(SVC, "/Int") == "40000"
    assert type(client.value(SVC, "/Float")) is dbus.Double
    assert client.text(SVC, "/ProductId") == "0xBA77"
    assert client.call(SVC, "/Invalid", "GetDescription", "si", "en", 0) == "never valid"
    items = client.call(SVC, "/", "GetItems")
    assert items["/Invalid"]["Text"] == "---"
    assert items["/Invalid"]["Value"].signature == "i" and len(items["/Invalid"]["Value"]) == 0
    assert items["/Int"]["Value"] == 40000 and items["/Int"]["Text"] == "40000"
    # Intermediate nodes answer with their subtree, keys relative to the node.
    subtree = client.value(SVC, "/Dc")
    assert set(subtree) == {"0/Voltage", "0/Current"} and subtree["0/Voltage"] == 52.5
    assert client.text(SVC, "/Dc/0") == {"Voltage": "52.5", "Current": "---"}
    # Invalidating a valid path works the same way.
    service["/Int"] = None
    assert client.text(SVC, "/Int") == "---"
    assert len(client.value(SVC, "/Int")) == 0


def test_setvalue_return_codes(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    service = velib.vedbus.VeDbusService(SVC, private_bus(dbus_daemon, buses), register=False)
    asked: list[tuple[str, Any]] = []

    def up_to_100(path: str, value: Any) -> bool:
        asked.append((path, value))
        return value <= 100

    service.add_path("/DeviceInstance", 1)
    service.add_path("/Fixed", "original")
    service.add_path("/Typed", 5, writeable=True, valuetype=int)
    service.add_path("/Limited", 10, writeable=True, onchangecallback=up_to_100)
    service.register()

    assert client.set(SVC, "/Fixed", "other") == 1  # not writeable
    assert client.value(SVC, "/Fixed") == "original"
    assert client.set(SVC, "/Typed", "abc") == 1  # int("abc") fails
    assert service["/Typed"] == 5
    assert client.set(SVC, "/Typed", 7.9) == 0  # converted by valuetype
    assert service["/Typed"] == 7 and type(client.value(SVC, "/Typed")) is dbus.Int32
    assert client.set(SVC, "/Limited", 150) == 2  # refused by the callback
    assert service["/Limited"] == 10
    assert client.set(SVC, "/Limited", 50) == 0
    assert service["/Limited"] == 50
    assert asked == [("/Limited", 150), ("/Limited", 50)]
    assert client.set(SVC, "/Limited", 50) == 0  # equal value: accepted, callback not asked
    assert asked == [("/Limited", 150), ("/Limited", 50)]


def test_with_block_sends_exactly_one_itemschanged(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    service = make_service(velib, private_bus(dbus_daemon, buses))
    client.record(SVC)
    with service as s:
        s["/Int"] = 1
        s["/String"] = "batched"
        s["/Dc/0/Current"] = -3.5
        s["/Float"] = 1.5  # unchanged: not part of the batch
        assert not client.signals
    service["/Dc/0/Voltage"] = 53.0  # sentinel, outside the block
    client.wait_signal("PropertiesChanged", "/Dc/0/Voltage")

    assert [s[:2] for s in client.signals] == [
        ("ItemsChanged", "/"),
        ("PropertiesChanged", "/Dc/0/Voltage"),
    ]
    batch = client.signals[0][2]
    assert set(batch) == {"/Int", "/String", "/Dc/0/Current"}
    assert batch["/Int"]["Value"] == 1 and batch["/Int"]["Text"] == "1"
    assert batch["/String"]["Value"] == "batched"
    assert batch["/Dc/0/Current"]["Value"] == -3.5
    sentinel = client.signals[1][2]
    assert sentinel["Value"] == 53.0 and sentinel["Text"] == "53.0"


def test_unchanged_value_emits_nothing(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    service = make_service(velib, private_bus(dbus_daemon, buses))
    client.record(SVC)
    service["/Int"] = 40000
    service["/Int"] = 40000.0  # equal as a number: no change, and the type stays int
    service["/Invalid"] = None
    with service as s:
        s["/String"] = "hello"
    service["/Float"] = 2.5  # sentinel
    client.wait_signal("PropertiesChanged", "/Float")
    assert [s[:2] for s in client.signals] == [("PropertiesChanged", "/Float")]
    assert type(client.value(SVC, "/Int")) is dbus.Int32


def test_two_phase_registration_publishes_device_instance_first(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    bus = private_bus(dbus_daemon, buses)
    service = velib.vedbus.VeDbusService(SVC, bus, register=False)
    service.add_mandatory_paths("fidelity", "1.0", "test", 288, 0xBA77, "Test", "v1", 2, 1)
    assert not client.bus.name_has_owner(SVC)
    owners: list[str] = []
    client.bus.add_signal_receiver(
        lambda name, old, new: owners.append(str(new)) if name == SVC else None,
        "NameOwnerChanged",
        "org.freedesktop.DBus",
    )
    client.bus.call_blocking(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", []
    )
    service.register()
    iterate_until(lambda: owners, what="NameOwnerChanged")
    # The first thing a scanner can see is the complete service.
    items = client.call(SVC, "/", "GetItems")
    assert items["/DeviceInstance"]["Value"] == 288
    assert {
        "/Mgmt/ProcessName",
        "/Mgmt/ProcessVersion",
        "/Mgmt/Connection",
        "/ProductId",
        "/ProductName",
        "/FirmwareVersion",
        "/HardwareVersion",
        "/Connected",
    } <= set(items)
    assert service.get_name() == SVC and "/DeviceInstance" in service
    assert service.dbusconn is bus


# The real velib_python's root object complains in __del__ after its failed construction.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_connection_per_service(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    bus_a = private_bus(dbus_daemon, buses)
    one = make_service(velib, bus_a, "com.victronenergy.battery.one")
    two = make_service(velib, private_bus(dbus_daemon, buses), "com.victronenergy.battery.two")
    one["/Int"] = 1
    two["/Int"] = 2
    assert client.value("com.victronenergy.battery.one", "/Int") == 1
    assert client.value("com.victronenergy.battery.two", "/Int") == 2
    # The same name from another connection is refused (no queueing).
    third = velib.vedbus.VeDbusService(
        "com.victronenergy.battery.one", private_bus(dbus_daemon, buses), register=False
    )
    with pytest.raises(dbus.exceptions.NameExistsException):
        third.register()
    # A second service on a connection that already carries one cannot even be built: the
    # root object "/" exists once per connection.
    with pytest.raises(KeyError):
        velib.vedbus.VeDbusService("com.victronenergy.battery.three", bus_a, register=False)
    assert client.value("com.victronenergy.battery.one", "/Int") == 1


def test_deleting_a_path_removes_it_and_empty_nodes(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], client: Client
) -> None:
    service = make_service(velib, private_bus(dbus_daemon, buses))
    del service["/Dc/0/Voltage"]
    assert "/Dc/0/Voltage" not in service
    assert "/Dc/0/Voltage" not in client.call(SVC, "/", "GetItems")
    assert set(client.value(SVC, "/Dc")) == {"0/Current"}
    del service["/Dc/0/Current"]
    with pytest.raises(dbus.exceptions.DBusException):
        client.value(SVC, "/Dc")


# ---- VeDbusItemImport ----------------------------------------------------------------------


def test_item_import_follows_both_signal_kinds(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any], hosts: list[Host]
) -> None:
    hosts.append(Host(dbus_daemon, velib, SVC, "5"))
    bus = private_bus(dbus_daemon, buses)
    events: list[tuple[str, str, Any, Any]] = []

    def on_change(service: str, path: str, changes: dict[str, Any]) -> None:
        events.append((service, path, changes["Value"], changes["Text"]))

    soc = velib.vedbus.VeDbusItemImport(bus, SVC, "/Soc", on_change)
    assert (soc.serviceName, soc.path, soc.get_value()) == (SVC, "/Soc", 50)
    assert soc.exists and soc.get_text() == "50"
    invalid = velib.vedbus.VeDbusItemImport(bus, SVC, "/Invalid", createsignal=False)
    assert invalid.exists and invalid.get_value() is None
    missing = velib.vedbus.VeDbusItemImport(bus, SVC, "/Nope", createsignal=False)
    assert not missing.exists and missing.get_value() is None
    limited = velib.vedbus.VeDbusItemImport(bus, SVC, "/Limited", createsignal=False)
    assert limited.set_value(500) == 2 and limited.get_value() == 10
    assert limited.set_value(20) == 0 and limited.get_value() == 20

    assert soc.set_value(60) == 0
    assert soc.get_value() == 60  # re-read at once, no need to wait for the signal
    iterate_until(lambda: events, what="callback for own write")
    assert events == [(SVC, "/Soc", 60, "60")]

    hosts[0].command(set={"/Soc": 61})  # PropertiesChanged
    iterate_until(lambda: len(events) == 2, what="PropertiesChanged")
    hosts[0].command(batch={"/Soc": 62, "/Dc/0/Voltage": 50.0})  # ItemsChanged
    iterate_until(lambda: len(events) == 3, what="ItemsChanged")
    assert events[1:] == [(SVC, "/Soc", 61, "61"), (SVC, "/Soc", 62, "62")]
    assert soc.get_value() == 62


# ---- SettingsDevice ------------------------------------------------------------------------

SETTINGS = "com.victronenergy.settings"
X_PATH = "/Settings/CanBridge/Fidelity/X"


def supported(default: Any = 5) -> dict[str, list[Any]]:
    return {
        "x": [X_PATH, default, 0, 100],
        "name": ["/Settings/CanBridge/Fidelity/Name", "abc", 0, 0],
    }


def test_settingsdevice_cache_lags_own_writes_and_reports_them(
    velib: Velib, settings_service: SettingsService, buses: list[Any]
) -> None:
    calls: list[tuple[str, Any, Any]] = []
    settings = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses),
        supported(),
        lambda setting, old, new: calls.append((setting, old, new)),
        timeout=5,
    )
    assert settings["x"] == 5 and settings["name"] == "abc"
    settings["x"] = 7
    assert settings["x"] == 5  # not yet: only the returning signal updates the cache
    assert calls == []
    iterate_until(lambda: calls, what="eventCallback for own write")
    assert calls == [("x", 5, 7)]
    assert settings["x"] == 7
    settings["name"] = "def"
    iterate_until(lambda: len(calls) == 2, what="second callback")
    assert calls[1] == ("name", "abc", "def")


def test_settingsdevice_reports_changes_by_others(
    velib: Velib, settings_service: SettingsService, buses: list[Any], client: Client
) -> None:
    calls: list[tuple[str, Any, Any]] = []
    settings = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses),
        supported(),
        lambda setting, old, new: calls.append((setting, old, new)),
        timeout=5,
    )
    assert client.set(SETTINGS, X_PATH, 9) == 0
    iterate_until(lambda: calls, what="eventCallback for a foreign write")
    assert calls == [("x", 5, 9)] and settings["x"] == 9


def test_settingsdevice_readding_keeps_stored_value(
    velib: Velib, settings_service: SettingsService, buses: list[Any]
) -> None:
    first = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses), supported(), None, timeout=5
    )
    first["x"] = 42
    again = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses), supported(default=5), None, timeout=5
    )
    assert again["x"] == 42
    assert again["name"] == "abc"


def test_settingsdevice_refused_write_raises(
    velib: Velib, settings_service: SettingsService, buses: list[Any]
) -> None:
    settings = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses), supported(), None, timeout=5
    )
    with pytest.raises(AssertionError):
        settings["x"] = 1000  # above max 100: the settings service answers -1


def test_settingsdevice_without_settings_service_raises_after_timeout(
    velib: Velib, dbus_daemon: DbusDaemon, buses: list[Any]
) -> None:
    bus = private_bus(dbus_daemon, buses)
    with pytest.raises(Exception, match="settings"):
        velib.settingsdevice.SettingsDevice(bus, supported(), None, timeout=0)
    start = time.monotonic()
    with pytest.raises(Exception, match="settings"):
        velib.settingsdevice.SettingsDevice(bus, supported(), None, timeout=1)
    assert time.monotonic() - start >= 0.9  # it waited (blocking) before giving up


def test_settingsdevice_survives_settings_service_restart(
    velib: Velib, settings_service: SettingsService, buses: list[Any], client: Client
) -> None:
    calls: list[tuple[str, Any, Any]] = []
    settings = velib.settingsdevice.SettingsDevice(
        private_bus(settings_service.daemon, buses),
        supported(),
        lambda setting, old, new: calls.append((setting, old, new)),
        timeout=5,
    )
    settings["x"] = 11
    iterate_until(lambda: calls, what="callback before restart")
    settings_service.restart()
    settings["x"] = 12  # the proxy addresses the well-known name, so this reaches the new one
    iterate_until(lambda: len(calls) == 2, what="callback after restart")
    assert calls == [("x", 5, 11), ("x", 11, 12)] and settings["x"] == 12
    assert client.set(SETTINGS, X_PATH, 13) == 0
    iterate_until(lambda: len(calls) == 3, what="foreign write after restart")
    assert calls[2] == ("x", 12, 13)


# ---- DbusMonitor ---------------------------------------------------------------------------


def test_dbusmonitor_sees_services_come_change_and_go(
    velib: Velib, dbus_daemon: DbusDaemon, hosts: list[Host]
) -> None:
    added: list[tuple[str, int]] = []
    removed: list[tuple[str, int]] = []
    changed: list[tuple[str, str, Any, Any, Any, int]] = []
    soc_options = {"code": "soc"}
    tree = {"com.victronenergy.battery": {"/Soc": soc_options, "/Dc/0/Voltage": {}, "/Gone": {}}}

    def on_value(service: str, path: str, options: Any, changes: Any, instance: int) -> None:
        changed.append((service, path, options, changes["Value"], changes["Text"], instance))

    early = "com.victronenergy.battery.early"
    hosts.append(Host(dbus_daemon, velib, early, "3"))
    monitor = velib.dbusmonitor.DbusMonitor(
        tree,
        on_value,
        deviceAddedCallback=lambda name, instance: added.append((name, instance)),
        deviceRemovedCallback=lambda name, instance: removed.append((name, instance)),
    )
    # Found by the initial (synchronous) scan: no deviceAddedCallback for it.
    assert monitor.get_service_list() == {early: 3}
    assert monitor.get_value(early, "/Dc/0/Voltage") == 52.5
    assert monitor.get_value(early, "/Gone", "dflt") == "dflt"

    # A service without /DeviceInstance is ignored; the next one is picked up.
    hosts.append(Host(dbus_daemon, velib, "com.victronenergy.battery.noinstance", "none"))
    hosts.append(Host(dbus_daemon, velib, SVC, "7"))
    hosts.append(Host(dbus_daemon, velib, "com.victronenergy.vebus.other", "9"))  # not watched
    iterate_until(lambda: added, what="deviceAddedCallback")
    assert added == [(SVC, 7)]
    assert monitor.get_service_list("com.victronenergy.battery") == {early: 3, SVC: 7}
    assert monitor.get_device_instance(SVC) == 7
    assert monitor.get_value(SVC, "/Soc") == 50
    assert monitor.get_value(SVC, "/Nope", 1) == 1

    assert monitor.set_value(SVC, "/Soc", 55) == 0  # PropertiesChanged
    assert monitor.set_value(SVC, "/Unwatched", 1) == -1
    iterate_until(lambda: changed, what="valueChangedCallback")
    assert changed == [(SVC, "/Soc", soc_options, 55, "55", 7)]
    assert monitor.get_value(SVC, "/Soc") == 55

    hosts[2].command(batch={"/Soc": 56, "/Dc/0/Voltage": 51.0, "/Connected": 0})  # ItemsChanged
    iterate_until(lambda: len(changed) == 3, what="values from ItemsChanged")
    assert sorted(c[1:5] for c in changed[1:]) == [
        ("/Dc/0/Voltage", {}, 51.0, "51.0"),
        ("/Soc", soc_options, 56, "56"),
    ]

    host = hosts.pop(2)
    host.stop()
    iterate_until(lambda: removed, what="deviceRemovedCallback")
    assert removed == [(SVC, 7)]
    assert monitor.get_value(SVC, "/Soc", "gone") == "gone"
    assert monitor.get_service_list() == {early: 3}
