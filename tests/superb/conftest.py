"""Fixtures for the SuperB driver tests: the whole system as real processes.

``superb`` starts a private dbus-daemon, the settings service (pre-seeded with test settings:
short poll intervals and timeouts), the loopback CAN hub, the battery simulator
(``python -m sim.superb``) and the driver (``python -m driver.superb.main``), and offers a
blocking D-Bus client plus the simulator's control port.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import dbus
import pytest

from driver.schema import load_schema
from tests.fixtures.canlink import CanLink
from tests.fixtures.procs import Proc, python_cmd, stop_all
from tests.fixtures.venus import DbusDaemon, SettingsService, real_localsettings

BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.settings"
PREFIX = "/Settings/CanBridge/Superb/"
MANAGER = "com.victronenergy.canbridge.superb"
AGGREGATE = "com.victronenergy.battery.superb_aggregate"
SERIAL_BASE = 2300000

#: settings that keep the tests fast (the defaults are for a real installation)
FAST = {"PollInterval": 0.3, "SdoTimeout": 0.1, "OfflineAfterTimeouts": 3,
        "HeartbeatTimeout": 1.5, "SlowPollInterval": 5.0, "NodeIds": "1,2,3",
        "LimitRampRate": 1000.0}


def battery_service(node: int) -> str:
    return f"com.victronenergy.battery.superb_{SERIAL_BASE + node}"


def settings_xml(values: dict[str, Any]) -> str:
    """A settings.xml holding the given Superb settings (typed as in the schema)."""
    schema = load_schema()
    items = []
    for key, value in values.items():
        s = schema.by_path[PREFIX + key]
        attrs = f'type="{s.type}" default="{s.dbus_default()}" silent="False"'
        if s.type != "s":
            attrs += f' min="{s.dbus_min()}" max="{s.dbus_max()}"'
        items.append((key.split("/"), attrs, escape(str(s.typed(value)))))
    lines = ["<?xml version='1.0' encoding='UTF-8'?>", '<Settings version="1.0">',
             "<CanBridge><Superb>"]
    groups: dict[str, list[str]] = {}
    for parts, attrs, text in items:
        leaf = f"<{parts[-1]} {attrs}>{text}</{parts[-1]}>"
        groups.setdefault("/".join(parts[:-1]), []).append(leaf)
    for group, leaves in groups.items():
        if group:
            lines.append(f"<{group}>" + "".join(leaves) + f"</{group}>")
        else:
            lines.extend(leaves)
    lines += ["</Superb></CanBridge>", "</Settings>"]
    return "\n".join(lines)


class Client:
    """Blocking BusItem calls on a private connection (the test has no main loop)."""

    def __init__(self, address: str) -> None:
        self.bus = dbus.bus.BusConnection(address)

    def close(self) -> None:
        self.bus.close()

    def _call(self, service: str, path: str, method: str, *args: Any) -> Any:
        obj = self.bus.get_object(service, path, introspect=False)
        return getattr(obj, method)(*args, dbus_interface=BUSITEM)

    def value(self, service: str, path: str) -> Any:
        v = self._call(service, path, "GetValue")
        return unwrap(v)

    def items(self, service: str) -> dict[str, Any]:
        return {str(k): unwrap(v["Value"]) for k, v in
                self._call(service, "/", "GetItems").items()}

    def set(self, service: str, path: str, value: Any) -> int:
        return int(self._call(service, path, "SetValue", value))

    def setting(self, key: str, value: Any) -> int:
        return self.set(SETTINGS, PREFIX + key, value)

    def has(self, service: str) -> bool:
        return bool(self.bus.name_has_owner(service))

    def services(self, prefix: str) -> list[str]:
        return sorted(str(n) for n in self.bus.list_names() if str(n).startswith(prefix))

    def wait(self, what: str, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``fn`` (D-Bus errors count as not yet) until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = fn()
                if last:
                    return last
            except dbus.exceptions.DBusException as exc:
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"last: {last!r}")
            time.sleep(0.05)

    def wait_value(self, service: str, path: str, pred: Callable[[Any], bool],
                   timeout: float = 10.0) -> Any:
        box: dict[str, Any] = {}

        def check() -> bool:
            box["v"] = self.value(service, path)
            return pred(box["v"])

        self.wait(f"{service}{path}", check, timeout)
        return box["v"]


def unwrap(v: Any) -> Any:
    if isinstance(v, dbus.Array) and len(v) == 0:
        return None
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, dbus.Int16 | dbus.Int32 | dbus.Int64 | dbus.UInt16 | dbus.UInt32 |
                  dbus.UInt64 | dbus.Byte):
        return int(v)
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(v, dbus.String):
        return str(v)
    if isinstance(v, dbus.Dictionary):
        return {str(k): unwrap(x) for k, x in v.items()}
    if isinstance(v, dbus.Array):
        return [unwrap(x) for x in v]
    return v


class Sim:
    """The simulator process and its control port."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        _, line = proc.wait_for(r"SIMCONTROL=", 20)
        self.address = line.split("=", 1)[1].strip()

    def cmd(self, line: str) -> str:
        from sim.superb import control

        answer = control(self.address, line)
        assert answer.startswith("OK"), f"simulator refused {line!r}: {answer}"
        return answer[2:].strip()

    def get(self, node: int) -> dict[str, Any]:
        return dict(json.loads(self.cmd(f"get {node}")))


class System:
    def __init__(self, daemon: DbusDaemon, link: CanLink, procs: list[Proc],
                 settings: SettingsService) -> None:
        self.daemon = daemon
        self.link = link
        self.procs = procs
        self.settings = settings
        self.client = Client(daemon.address)
        self.env = daemon.env(CANBRIDGE_CANLINK=link.address, PYTHONUNBUFFERED="1")
        self.sim: Sim | None = None
        self.driver: Proc | None = None

    def start_sim(self, *args: str, name: str = "sim", module: str = "sim.superb") -> Sim:
        """Start a battery simulator (``sim.superb``, or ``sim.superb_quirky``)."""
        proc = Proc(python_cmd(module, "--control-port", "0", *args), self.env, name)
        self.procs.append(proc)
        sim = Sim(proc)
        if self.sim is None:
            self.sim = sim
        return sim

    def start_driver(self, *args: str) -> Proc:
        proc = Proc(python_cmd("driver.superb.main", *args), self.env, "dbus-superb")
        self.procs.append(proc)
        self.driver = proc
        self.client.wait("manager service", lambda: self.client.has(MANAGER), 20)
        return proc


@pytest.fixture
def superb_settings() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the seeded settings."""
    return dict(FAST)


@pytest.fixture
def superb(dbus_daemon: DbusDaemon, canlink: CanLink, procs: list[Proc],
           superb_settings: dict[str, Any]) -> Iterator[System]:
    """Bus, seeded settings service and loopback CAN link; start the sim and driver yourself."""
    datadir = dbus_daemon.workdir / "conf"
    datadir.mkdir()
    seed = Path(dbus_daemon.workdir / "seed.xml")
    seed.write_text(settings_xml(superb_settings))
    svc = SettingsService(daemon=dbus_daemon, datadir=datadir, real=real_localsettings(),
                          seed=seed, log=dbus_daemon.workdir / "settings.log")
    if svc.real:
        (datadir / "settings.xml").write_text(seed.read_text())
    svc.start()
    system = System(dbus_daemon, canlink, procs, svc)
    try:
        yield system
    finally:
        stop_all(procs)
        procs.clear()
        system.client.close()
        svc.stop()
