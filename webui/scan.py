"""Finding batteries: start the SuperB driver's node scan and read what it found.

The SuperB driver publishes a management service ``com.victronenergy.canbridge.superb*`` with
the scan as D-Bus paths (see docs/superb.md). This module knows those paths (one table) and
turns them into the JSON of ``GET /api/scan``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from webui.dbus_backend import BackendUnavailable

SERVICE_PREFIX = "com.victronenergy.canbridge.superb"
PATHS = {
    "start": "/Scan/Start",  # write 1 to start a scan
    "running": "/Scan/Running",  # 1 while scanning
    "progress": "/Scan/Progress",  # percent
    "result": "/Scan/Result",  # JSON text: [{"node": n, "serial": ..., "firmware": ...}]
    "range": "/Scan/Range",  # the node IDs probed
    "error": "/Scan/LastError",  # why the last scan could not run ("" if it did)
}
#: alternative form: one subtree per node found
NODE_RE = re.compile(r"^/Scan/Nodes/(\d+)/(\w+)$")


def _manager(backend: Any) -> dict[str, Any] | None:
    for svc in backend.services("canbridge"):
        if svc["service"].startswith(SERVICE_PREFIX):
            return svc  # type: ignore[no-any-return]
    return None


def _nodes(values: dict[str, Any]) -> list[dict[str, Any]]:
    raw = values.get(PATHS["result"])
    nodes: dict[int, dict[str, Any]] = {}
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = []
        for item in parsed if isinstance(parsed, list) else []:
            if isinstance(item, dict) and isinstance(item.get("node"), int):
                nodes[item["node"]] = {"node": item["node"], "serial": item.get("serial"),
                                       "firmware": item.get("firmware"),
                                       "product": item.get("product")}
    for path, value in values.items():
        m = NODE_RE.match(path)
        if m:
            n = int(m.group(1))
            nodes.setdefault(n, {"node": n, "serial": None, "firmware": None, "product": None})
            key = {"Serial": "serial", "FirmwareVersion": "firmware", "Firmware": "firmware",
                   "ProductName": "product", "Product": "product"}.get(m.group(2))
            if key:
                nodes[n][key] = value
    return [nodes[n] for n in sorted(nodes)]


def state(backend: Any) -> dict[str, Any]:
    """The scan's state: whether the driver offers one, running, progress, nodes found."""
    svc = _manager(backend)
    if svc is None:
        return {"available": False, "running": False, "nodes": [],
                "message": "the SuperB driver (dbus-superb) is not running, so no scan is "
                           "possible"}
    v = svc["values"]
    nodes = _nodes(v)
    return {"available": True, "service": svc["service"], "running": bool(v.get(
        PATHS["running"])), "progress": v.get(PATHS["progress"]), "range": v.get(PATHS["range"]),
        "nodes": nodes, "node_ids": ",".join(str(n["node"]) for n in nodes),
        "error": v.get(PATHS["error"]) or ""}


def start(backend: Any) -> tuple[int, dict[str, Any]]:
    """Ask the driver to scan: (HTTP status, JSON body). BackendUnavailable if it is not there.

    The driver refuses (SetValue answers 2) while a scan runs or its CAN port is closed; it
    says why in ``/Scan/LastError``.
    """
    svc = _manager(backend)
    if svc is None:
        raise BackendUnavailable("the SuperB driver (dbus-superb) is not running, so no scan "
                                 "is possible")
    if svc["values"].get(PATHS["running"]):
        # /Scan/Start stays 1 while a scan runs, and velib answers 0 to a write of the
        # current value without asking the driver: say so here.
        return 409, {"error": "the SuperB driver did not start a scan: a scan is already "
                              "running"}
    answer = backend.set_service_value(svc["service"], PATHS["start"], 1)
    if answer != 0:
        time.sleep(0.2)  # let the driver's /Scan/LastError reach the cache
        why = state(backend).get("error") or "a scan is running or the CAN port is closed"
        return 409, {"error": f"the SuperB driver did not start a scan: {why}",
                     "answer": answer}
    return 200, {"ok": True, "started": True}
