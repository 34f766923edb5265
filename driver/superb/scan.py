"""Finding SuperB batteries on the bus: heartbeats heard plus identity reads (read-only).

:func:`scan` probes every node ID of a range with SDO uploads of 1018:01..04 and 100A (one
transaction per node at a time, through :meth:`CanPort.upload`, several nodes at once), and adds
nodes that were heard (heartbeats) but did not answer. Nodes the driver already polls are not
asked again: their poller's identity is used, so a scan never doubles the load on a battery.
No D-Bus here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from driver.superb import objects as objs
from driver.superb.canport import BadResponse, BusDown, CanPort, SdoAbort, SdoTimeout

log = logging.getLogger("canbridge.superb.scan")


def _probe(port: CanPort, node: int, timeout: float) -> dict[str, Any] | None:
    found: dict[str, Any] = {}
    for key in ("vendor", "serial", "product", "revision", "software_version"):
        obj = objs.BY_KEY[key]
        try:
            data = port.upload(node, obj.index, obj.subindex, timeout)
        except SdoTimeout:
            if not found:
                return None  # nobody there
            continue
        except (SdoAbort, BadResponse):
            continue
        except BusDown:
            return None
        try:
            found[key] = objs.decode(obj, data)
        except objs.DecodeError:
            continue
    return found


def describe(node: int, identity: Mapping[str, Any], heard: bool, polled: bool) -> dict[str, Any]:
    """One entry of the scan result (JSON-ready)."""
    fw = objs.parse_firmware(identity.get("software_version"), identity.get("revision"))
    vendor = identity.get("vendor")
    return {
        "node": node, "serial": identity.get("serial"), "firmware": objs.format_firmware(fw),
        "vendor": None if vendor is None else f"0x{vendor:X}",
        "product": identity.get("device_name") or (
            None if identity.get("product") is None else f"0x{identity['product']:X}"),
        "superb": vendor == objs.SUPERB_VENDOR_ID, "heartbeat": heard,
        "answers": bool(identity), "configured": polled,
    }


def scan(port: CanPort, nodes: list[int], known: Mapping[int, Mapping[str, Any]], *,
         timeout: float = 0.1, workers: int = 8,
         progress: Callable[[int], None] | None = None,
         cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """Probe ``nodes``; ``known`` holds the identity of nodes already polled."""
    results: dict[int, dict[str, Any]] = {}
    done = 0
    lock = threading.Lock()

    def one(node: int) -> None:
        nonlocal done
        if cancel is not None and cancel.is_set():
            return
        heard = port.seen(node).heartbeat_time is not None
        if known.get(node):
            entry = describe(node, known[node], heard, True)
        else:
            ident = _probe(port, node, timeout)
            entry = describe(node, ident or {}, heard, node in known) \
                if ident or heard else {}
        with lock:
            if entry:
                results[node] = entry
            done += 1
            if progress is not None:
                progress(round(100 * done / max(1, len(nodes))))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="superb-scan") as ex:
        list(ex.map(one, nodes))
    for node in nodes:
        if node not in known:
            port.forget(node)
    log.info("scan of %d node IDs found %s", len(nodes),
             ", ".join(str(n) for n in sorted(results)) or "nothing")
    return [results[n] for n in sorted(results)]
