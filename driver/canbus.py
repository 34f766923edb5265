"""Building python-can buses from settings.

One function, :func:`open_bus`, turns the ``CanInterface``/``Bitrate`` settings into a python-can
bus:

* ``vecan0``, ``can1`` ... -> SocketCAN on the GX (the port's bitrate is set by Venus's CAN
  profile, not by us);
* ``interface:channel`` -> any python-can interface, e.g. ``slcan:/dev/ttyACM0``,
  ``socketcan:can1``, ``canlink:vecan0``;
* off the GX, when ``$CANBRIDGE_CANLINK`` names the loopback hub, a plain channel name is opened
  on the loopback CAN link instead (``sim/canlink``), so the demo and the tests run the drivers
  with exactly the settings they have on a GX.

With a ``role`` (the drivers pass one), the setting is first resolved on this GX by
:func:`driver.canports.resolve`: ``auto`` becomes the VE.Can port (SuperB) or the other CAN port
(Sunny Island) of this model, and a name that does not exist (or the BMS-only port for SuperB)
fails with a message that says which CAN interfaces there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import can

from driver.canports import CANLINK_ENV, CanPortError, resolve


@dataclass(frozen=True)
class BusSpec:
    """Which python-can interface and channel a setting value stands for."""

    interface: str
    channel: str
    bitrate: int | None

    def describe(self) -> str:
        rate = f" at {self.bitrate // 1000} kbit/s" if self.bitrate else ""
        return f"{self.interface}:{self.channel}{rate}"


def bus_spec(setting: str, bitrate: int | None = None) -> BusSpec:
    """Interpret a ``CanInterface`` setting value."""
    text = setting.strip()
    if not text:
        raise ValueError("no CAN interface configured")
    if ":" in text:
        interface, channel = text.split(":", 1)
        if not interface or not channel:
            raise ValueError(
                f"bad CAN interface {setting!r}; use e.g. vecan0 or slcan:/dev/ttyACM0")
        return BusSpec(interface, channel, bitrate)
    if os.environ.get(CANLINK_ENV):
        return BusSpec("canlink", text, bitrate)
    return BusSpec("socketcan", text, bitrate)


def open_bus(setting: str, bitrate: int | None = None, role: str | None = None,
             **kwargs: Any) -> can.BusABC:
    """Open the bus a ``CanInterface`` setting names. Raises :class:`can.CanError` on failure.

    ``role`` (``driver.canports.ROLE_SUPERB``/``ROLE_SMA``): resolve the setting on this GX first.
    """
    if role is not None:
        try:
            setting = resolve(setting, role)
        except CanPortError as exc:
            raise can.CanInitializationError(str(exc)) from exc
    spec = bus_spec(setting, bitrate)
    args: dict[str, Any] = {"interface": spec.interface, "channel": spec.channel}
    if spec.interface not in ("socketcan", "canlink", "virtual") and spec.bitrate:
        args["bitrate"] = spec.bitrate
    if spec.interface == "canlink" and os.environ.get(CANLINK_ENV):
        args["address"] = os.environ[CANLINK_ENV]
    args.update(kwargs)
    try:
        return can.Bus(**args)
    except (OSError, ValueError) as exc:
        raise can.CanInitializationError(f"cannot open {spec.describe()}: {exc}") from exc
