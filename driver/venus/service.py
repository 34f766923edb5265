"""Publishing Venus D-Bus services.

Every service is a velib ``VeDbusService`` on its own private bus connection, registered in two
phases: :func:`create_service` makes it unregistered with the mandatory paths, the caller adds
every other path, then calls ``service.register()``. Consumers such as systemcalc scan a new
service once with ``GetItems``, so everything (``/DeviceInstance`` above all) must exist before
the name is claimed.
"""

from __future__ import annotations

import logging
from typing import Any

from driver.venus.dbusconn import assert_main_thread, private_bus
from driver.venus.velib import Velib

log = logging.getLogger("canbridge.venus")

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
