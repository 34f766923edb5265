"""The CAN interfaces of this GX, found rather than assumed (see docs/install.md, "CAN ports").

GX models name their CAN ports differently (meta-victronenergy,
``meta-venus/recipes-core/udev/files/*/machine.rules``): a Cerbo GX (MK1) has ``can0`` = "VE.Can
port" and ``can1`` = "BMS-Can port" (``VE_CAN_CONFIG=bms-only``: Venus reserves it for CAN-bus BMS
batteries); a Cerbo GX B1 or an Ekrano has ``vecan0`` = "VE.Can port 1" and ``vecan1`` = "VE.Can
port 2"; USB adapters (gs_usb, slcan) add more. So nothing here assumes a name:

* :func:`discover` lists the network interfaces of type 280 (``ARPHRD_CAN``) in
  ``/sys/class/net``, with the udev properties ``VE_NAME`` and ``VE_CAN_CONFIG`` that Venus's
  rules give them (read from udev's database, ``/run/udev/data/n<ifindex>``) where available.
  The file system root is injectable (``$CANBRIDGE_SYSROOT``, default ``/``) for tests;
* :func:`resolve` turns a ``CanInterface`` setting into an interface: ``auto`` is "the VE.Can
  port" for the SuperB driver and "the CAN port that is not the VE.Can port" for the Sunny
  Island bridge, resolved on this device; a name that does not exist, or the BMS-only port for
  SuperB batteries, gives a clear error instead of a bus.

Off the GX, with ``$CANBRIDGE_CANLINK`` set (the demo and the tests), plain names are channels of
the loopback ``canlink`` hub and are not checked; ``auto`` is ``vecan0`` (SuperB) or ``can1``
(Sunny Island), the channel names the simulators use. With both ``$CANBRIDGE_CANLINK`` and
``$CANBRIDGE_SYSROOT`` set (a simulated GX: its CAN interfaces under that root, its traffic on
the hub's channels of the same names), names are resolved and checked as on a GX.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSROOT_ENV = "CANBRIDGE_SYSROOT"
CANLINK_ENV = "CANBRIDGE_CANLINK"
ARPHRD_CAN = 280  # linux/if_arp.h: the "type" of a CAN network interface
AUTO = "auto"
ROLE_SUPERB = "superb"  # SuperB batteries: the VE.Can port, 250 kbit/s
ROLE_SMA = "sma"  # Sunny Island: a port of its own, 500 kbit/s
CANLINK_AUTO = {ROLE_SUPERB: "vecan0", ROLE_SMA: "can1"}
BMS_ONLY = "bms-only"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1


class CanPortError(ValueError):
    """The ``CanInterface`` setting names no usable CAN interface; the message says why."""


@dataclass(frozen=True)
class CanPort:
    """One CAN interface of this GX."""

    interface: str  #: the kernel name, e.g. ``can0`` or ``vecan1``
    name: str | None = None  #: Venus's udev VE_NAME, e.g. "VE.Can port" or "BMS-Can port"
    config: str | None = None  #: Venus's udev VE_CAN_CONFIG, e.g. "bms-only"
    up: bool | None = None  #: operstate up (None: unknown)
    profile: int | None = None  #: /Settings/Canbus/<interface>/Profile, when known

    @property
    def bms_only(self) -> bool:
        """Venus reserves this port for CAN-bus BMS batteries (the Cerbo GX's BMS-Can port)."""
        return self.config == BMS_ONLY

    @property
    def is_vecan(self) -> bool:
        """Venus calls this port a VE.Can port ("VE.Can port", "VE.Can port 1", ...)."""
        return bool(self.name) and str(self.name).startswith("VE.Can port")

    def label(self) -> str:
        """``can0 (VE.Can port)``, or just the interface name."""
        return f"{self.interface} ({self.name})" if self.name else self.interface

    def to_dict(self) -> dict[str, Any]:
        """The JSON form published on D-Bus and offered by the pages."""
        return {"interface": self.interface, "name": self.name or "", "config": self.config or "",
                "bmsOnly": int(self.bms_only), "up": None if self.up is None else int(self.up),
                "profile": self.profile, "label": self.label()}


def sysroot() -> Path:
    """The root under which /sys and /run are read (``$CANBRIDGE_SYSROOT`` or ``/``)."""
    return Path(os.environ.get(SYSROOT_ENV) or "/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _udev_env(root: Path, ifindex: str | None) -> dict[str, str]:
    """The E: (environment) entries of udev's database record of a network device."""
    if not ifindex or not ifindex.isdigit():
        return {}
    text = _read(root / "run/udev/data" / f"n{ifindex}")
    env: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("E:") and "=" in line:
            key, _, value = line[2:].partition("=")
            env[key] = value
    return env


def discover(root: Path | None = None,
             profiles: Mapping[str, int | None] | None = None) -> list[CanPort]:
    """The CAN interfaces present now, sorted by name. Never raises (no sysfs: empty list)."""
    root = root if root is not None else sysroot()
    net = root / "sys/class/net"
    ports: list[CanPort] = []
    try:
        entries = sorted(os.listdir(net))
    except OSError:
        return []
    for iface in entries:
        if not _NAME_RE.match(iface):
            continue
        kind = _read(net / iface / "type")
        if kind is None or not kind.isdigit() or int(kind) != ARPHRD_CAN:
            continue
        env = _udev_env(root, _read(net / iface / "ifindex"))
        state = _read(net / iface / "operstate")
        up = None if state in (None, "unknown") else state == "up"
        profile = (profiles or {}).get(iface)
        ports.append(CanPort(iface, env.get("VE_NAME") or None, env.get("VE_CAN_CONFIG") or None,
                             up, profile))
    return ports


class PortWatch:
    """:func:`discover`, re-read from sysfs at most every ``max_age`` seconds: what a driver
    publishes every second on its main loop, without a sysfs scan each time."""

    def __init__(self, max_age: float = 2.0, clock: Any = None, source: Any = None) -> None:
        import time

        self.max_age = max_age
        self._clock = clock or time.monotonic
        self._source = source or discover
        self._at = -math.inf
        self._ports: list[CanPort] = []

    def ports(self) -> list[CanPort]:
        """The CAN interfaces found, at most ``max_age`` seconds old."""
        now = self._clock()
        if now - self._at >= self.max_age:
            self._ports, self._at = self._source(), now
        return self._ports

    def invalidate(self) -> None:
        """Read sysfs again at the next call (e.g. after the CanInterface setting changed)."""
        self._at = -math.inf


def vecan_port(ports: list[CanPort]) -> CanPort | None:
    """The GX's (first) VE.Can port: by Venus's udev name; without names, the only CAN
    interface that is not BMS-only, if there is exactly one."""
    named = sorted((p for p in ports if p.is_vecan), key=lambda p: (p.name or "", p.interface))
    if named:
        return named[0]
    if any(p.name for p in ports):
        return None
    plain = [p for p in ports if not p.bms_only]
    return plain[0] if len(plain) == 1 else None


def second_port(ports: list[CanPort]) -> CanPort | None:
    """A CAN port for the Sunny Island: the first one that is not the VE.Can port (another
    VE.Can port first, then the BMS-Can port, then USB adapters by name)."""
    first = vecan_port(ports)
    others = [p for p in ports if p is not first]

    def rank(p: CanPort) -> tuple[int, str]:
        return (0 if p.is_vecan else 1 if p.name else 2, p.interface)

    others.sort(key=rank)
    return others[0] if others else None


def describe_found(ports: list[CanPort]) -> str:
    """``can0 (VE.Can port), can1 (BMS-Can port)`` or ``none``."""
    return ", ".join(p.label() for p in ports) or "none"


def resolve(setting: str, role: str, ports: list[CanPort] | None = None,
            canlink: bool | None = None) -> str:
    """The interface (or ``interface:channel`` spec) a ``CanInterface`` setting stands for.

    Raises :class:`CanPortError` with a message for the user when it names nothing usable.
    """
    value = str(setting).strip()
    if not value:
        raise CanPortError("no CAN interface configured: choose one")
    if ":" in value:
        return value  # another python-can interface, e.g. slcan:/dev/ttyACM0 (not checkable)
    if canlink is None:  # the loopback hub, unless a simulated GX's sysfs is given
        canlink = bool(os.environ.get(CANLINK_ENV)) and not os.environ.get(SYSROOT_ENV)
    if canlink:
        return CANLINK_AUTO[role] if value.lower() == AUTO else value
    ports = discover() if ports is None else ports
    found = describe_found(ports)
    if value.lower() == AUTO:
        port = vecan_port(ports) if role == ROLE_SUPERB else second_port(ports)
        if port is None:
            what = "VE.Can port" if role == ROLE_SUPERB else "second CAN port"
            raise CanPortError(f"no {what} found on this GX (CAN interfaces: {found}); "
                               "choose the CAN interface")
    else:
        port = next((p for p in ports if p.interface == value), None)
        if port is None:
            raise CanPortError(f"CAN interface {value!r} does not exist on this GX "
                               f"(CAN interfaces: {found})")
    if role == ROLE_SUPERB and port.bms_only:
        vecan = vecan_port(ports)
        hint = f" ({vecan.label()})" if vecan else ""
        raise CanPortError(f"{port.label()} is reserved by Venus for CAN-bus BMS batteries "
                           f"(500 kbit/s, BMS only); SuperB batteries need the VE.Can "
                           f"port{hint}")
    return port.interface


def is_can_interface_setting(key: str) -> bool:
    """Whether a schema key is a ``CanInterface`` setting (offered as a choice of ports)."""
    return key == "CanInterface" or key.endswith("/CanInterface")


def main(argv: list[str] | None = None) -> int:
    """``python -m driver.canports [--root DIR] [--resolve ROLE VALUE]`` (used by install.sh).

    Without ``--resolve``: one line per CAN interface (``can0<TAB>VE.Can port<TAB>bms-only``).
    With it: the interface VALUE resolves to for ROLE (superb, sma), or the error (exit 2).
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="List this GX's CAN interfaces")
    ap.add_argument("--root", type=Path, default=None, help="the GX's / (default $CANBRIDGE_"
                    "SYSROOT or /)")
    ap.add_argument("--resolve", nargs=2, metavar=("ROLE", "VALUE"))
    args = ap.parse_args(argv)
    ports = discover(args.root)
    if args.resolve:
        role, value = args.resolve
        try:
            print(resolve(value, role, ports, canlink=False))
        except CanPortError as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    for p in ports:
        print(f"{p.interface}\t{p.name or ''}\t{p.config or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
