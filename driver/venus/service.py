"""Publishing Venus D-Bus services.

Every service is a velib ``VeDbusService`` on its own private bus connection, registered in two
phases: :func:`create_service` makes it unregistered with the mandatory paths, the caller adds
every other path, then calls ``service.register()``. Consumers such as systemcalc scan a new
service once with ``GetItems``, so everything (``/DeviceInstance`` above all) must exist before
the name is claimed.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

from driver.venus.dbusconn import assert_main_thread, private_bus
from driver.venus.velib import Velib

log = logging.getLogger("canbridge.venus")

class SettingsPublisher(Protocol):
    """What publishes on every service of the process (the live settings' refusals)."""

    def publish_on(self, service: Any) -> None: ...


_publishers: weakref.WeakSet[Any] = weakref.WeakSet()

#: services that do not carry the process's settings refusals (the standard battery services
#: stay as Venus defines them; the driver's own service and vebus service carry them)
NO_REFUSAL_PATHS = ("com.victronenergy.battery.",)


def register_settings_publisher(publisher: SettingsPublisher) -> None:
    """Have ``publisher.publish_on(svc)`` called for every service :func:`create_service` makes.

    :class:`driver.venus.settings.LiveSettings` registers itself, so every driver's own
    service (``com.victronenergy.canbridge.*``, ``com.victronenergy.vebus.*``) carries
    ``/CanBridge/Refusals``, ``/CanBridge/LastRefusal`` and ``/CanBridge/RefusalCount`` without a
    line in the driver.
    """
    _publishers.add(publisher)


#: ProductId the community uses for third-party BMSes (0xB0xx ids trigger vendor quirks)
PRODUCT_ID_BMS = 0xBA77


def create_service(velib: Velib, servicename: str, *, processname: str, processversion: str,
                   connection: str, deviceinstance: int, productid: int, productname: str,
                   firmwareversion: Any = None, hardwareversion: Any = None,
                   connected: int = 1) -> Any:
    """An unregistered ``VeDbusService`` on a new private connection, with mandatory paths."""
    assert_main_thread("create_service")
    bus = private_bus()
    svc = velib.vedbus.VeDbusService(servicename, bus=bus, register=False)
    svc.add_mandatory_paths(processname, processversion, connection, deviceinstance,
                            productid, productname, firmwareversion, hardwareversion, connected)
    if not servicename.startswith(NO_REFUSAL_PATHS):
        for publisher in list(_publishers):
            publisher.publish_on(svc)
    return svc


def remove_service(service: Any) -> None:
    """Take a service off D-Bus now and close its private connection."""
    assert_main_thread("remove_service")
    name = service.get_name()
    conn = service.dbusconn
    service.__del__()
    try:
        conn.close()
    except Exception as exc:  # noqa: BLE001 - closing a dead connection is harmless
        log.debug("closing connection of %s: %s", name, exc)
    log.info("removed %s from D-Bus", name)
