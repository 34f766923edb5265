"""The status and diagnostics views, built from the backend's service caches.

Batteries and Sunny Islands are found generically: every ``com.victronenergy.battery.*`` and
``com.victronenergy.vebus.*`` service is shown with the standard Venus paths (PROTOCOLS.md §3),
so a battery from another driver shows too. Paths are data: one table per view.
"""

from __future__ import annotations

import json
from typing import Any

BATTERY_FIELDS = {
    "name": "/CustomName", "product": "/ProductName", "instance": "/DeviceInstance",
    "connected": "/Connected", "soc": "/Soc", "soh": "/Soh", "voltage": "/Dc/0/Voltage",
    "current": "/Dc/0/Current", "power": "/Dc/0/Power", "temperature": "/Dc/0/Temperature",
    "capacity": "/InstalledCapacity", "consumed": "/ConsumedAmphours",
    "time_to_go": "/TimeToGo", "allow_charge": "/Io/AllowToCharge",
    "allow_discharge": "/Io/AllowToDischarge", "process": "/Mgmt/ProcessName",
    "connection": "/Mgmt/Connection", "serial": "/Serial", "firmware": "/FirmwareVersion",
    "batteries": "/System/NrOfBatteries", "online": "/System/NrOfModulesOnline",
    "offline": "/System/NrOfModulesOffline", "min_cell": "/System/MinCellVoltage",
    "max_cell": "/System/MaxCellVoltage",
}
LIMIT_FIELDS = {
    "charge_voltage": "/Info/MaxChargeVoltage", "charge_current": "/Info/MaxChargeCurrent",
    "discharge_current": "/Info/MaxDischargeCurrent", "low_voltage": "/Info/BatteryLowVoltage",
}
VEBUS_FIELDS = {
    "name": "/CustomName", "product": "/ProductName", "instance": "/DeviceInstance",
    "connected": "/Connected", "state": "/State", "mode": "/Mode", "error": "/VebusError",
    "active_input": "/Ac/ActiveIn/ActiveInput", "ac_in_connected": "/Ac/ActiveIn/Connected",
    "ac_in_p": "/Ac/ActiveIn/P", "ac_out_p": "/Ac/Out/P", "phases": "/Ac/NumberOfPhases",
    "soc": "/Soc", "process": "/Mgmt/ProcessName", "firmware": "/FirmwareVersion",
}
DC_FIELDS = {"voltage": "/Dc/0/Voltage", "current": "/Dc/0/Current", "power": "/Dc/0/Power",
             "temperature": "/Dc/0/Temperature"}
PHASE_FIELDS = ("V", "I", "F", "P")
#: the bridge's charge controller / safety ladder (driver/sma; docs/sma.md)
SMA_EXTRA_PREFIXES = ("/CanBridge/", "/Sma/")
VEBUS_STATES = {0: "Off", 1: "Low power", 2: "Fault", 3: "Bulk", 4: "Absorption", 5: "Float",
                6: "Storage", 7: "Equalize", 8: "Passthru", 9: "Inverting", 10: "Assisting",
                244: "Sustain", 252: "External control"}
VEBUS_MODES = {1: "Charger only", 2: "Inverter only", 3: "On", 4: "Off"}


def _pick(values: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {k: values.get(p) for k, p in table.items()}


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {p[len(prefix):]: v for p, v in sorted(values.items()) if p.startswith(prefix)}


def _last_update(svc: dict[str, Any]) -> float | None:
    """Seconds since the service last published anything (changed or not)."""
    age = svc.get("signal_age")
    if age is not None:
        return float(age)
    ages = svc["ages"].values()
    return min(ages) if ages else None


def battery_read_age(svc: dict[str, Any], aggregate: bool,
                     node_reads: list[dict[str, Any]]) -> float | None:
    """Seconds since the driver last *read* this battery (not since a value changed).

    From dbus-superb's per-node read counters (``/Status/Nodes``: ``node_reads`` of the
    backend): the node with this battery's serial; for the aggregate, the oldest read among
    its nodes (the aggregate is only as fresh as its stalest member). Other drivers' batteries:
    the time since the service last published a value.
    """
    if node_reads:
        if aggregate:
            return max(r["age"] for r in node_reads)
        serial = str(svc["values"].get("/Serial") or "")
        ages = [r["age"] for r in node_reads if serial and r["serial"] == serial]
        if ages:
            return min(ages)
    return _last_update(svc)


def battery_view(svc: dict[str, Any],
                 node_reads: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    v = svc["values"]
    suffix = svc["service"].rsplit(".", 1)[-1]
    aggregate = "aggregate" in suffix.lower() or "aggregate" in str(
        v.get("/ProductName") or "").lower()
    out = {"service": svc["service"], **_pick(v, BATTERY_FIELDS),
           "limits": _pick(v, LIMIT_FIELDS), "alarms": _prefixed(v, "/Alarms/"),
           "age": battery_read_age(svc, aggregate, node_reads or [])}
    out["aggregate"] = aggregate
    out["title"] = out["name"] or out["product"] or suffix
    return out


def _vebus_age(svc: dict[str, Any]) -> float | None:
    """Seconds since dbus-sma last heard the Sunny Island (its ``/CanBridge/DataAge``, as
    of the last time it published, plus the time since then), else since it published."""
    data_age = svc["values"].get("/CanBridge/DataAge")
    since = _last_update(svc)
    if isinstance(data_age, (int, float)) and since is not None:
        return round(float(data_age) + since, 1)
    return since


def vebus_view(svc: dict[str, Any]) -> dict[str, Any]:
    v = svc["values"]
    out = {"service": svc["service"], **_pick(v, VEBUS_FIELDS), "dc": _pick(v, DC_FIELDS),
           "alarms": _prefixed(v, "/Alarms/"), "energy": _prefixed(v, "/Energy/"),
           "age": _vebus_age(svc)}
    for side, base in (("ac_in", "/Ac/ActiveIn/"), ("ac_out", "/Ac/Out/")):
        out[side] = {f"L{n}": {f: v.get(f"{base}L{n}/{f}") for f in PHASE_FIELDS}
                     for n in (1, 2, 3)
                     if any(v.get(f"{base}L{n}/{f}") is not None for f in PHASE_FIELDS)}
    out["state_text"] = VEBUS_STATES.get(out["state"], svc["texts"].get("/State", "---")) \
        if out["state"] is not None else "---"
    out["mode_text"] = VEBUS_MODES.get(out["mode"], "---") if out["mode"] is not None else "---"
    out["bridge"] = {p: v[p] for p in sorted(v) if p.startswith(SMA_EXTRA_PREFIXES)}
    out["ladder"] = v.get("/CanBridge/Ladder")
    out["charge_phase"] = v.get("/CanBridge/ChargePhase")
    out["battery_source"] = v.get("/CanBridge/BatterySource")
    out["battery_source_reason"] = v.get("/CanBridge/BatterySourceReason")
    out["soc_source"] = v.get("/CanBridge/SocSource")
    out["title"] = out["name"] or out["product"] or svc["service"].rsplit(".", 1)[-1]
    return out


def status(backend: Any) -> dict[str, Any]:
    """What ``GET /api/status`` returns."""
    services = backend.services()
    node_reads = [r for s in services if s["class"] == "canbridge"
                  for r in s.get("node_reads", {}).values()]
    return {
        "time": backend.clock(),
        "settings_available": backend.settings_available(),
        "batteries": [battery_view(s, node_reads) for s in services
                      if s["class"] == "battery"],
        "vebus": [vebus_view(s) for s in services if s["class"] == "vebus"],
        "refusals": refusals(services, backend.clock(), backend.local_refusals()),
    }


def refusals(services: list[dict[str, Any]], now: float,
             local: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The settings the drivers refused, as they publish them (``/CanBridge/Refusals``;
    docs/web.md "Refused values"): setting, value refused, value in force, rule, and when
    (wall clock, from the machine-wide monotonic clock the driver stamps it with)."""
    import time

    seen: dict[str, dict[str, Any]] = {r["setting"]: r for r in local or []}
    mono_now = time.monotonic()
    for svc in services:
        raw = svc["values"].get("/CanBridge/Refusals")
        try:
            items = json.loads(raw) if isinstance(raw, str) else []
        except ValueError:
            continue
        if not isinstance(items, list):
            continue
        for r in items:
            if not isinstance(r, dict) or not isinstance(r.get("setting"), str):
                continue
            mono = r.get("monotonic")
            when = now - (mono_now - mono) if isinstance(mono, (int, float)) else None
            entry = {"setting": r["setting"], "value": r.get("value"),
                     "in_force": r.get("in_force"), "rule": str(r.get("rule", "")),
                     "time": round(when, 1) if when is not None else None,
                     "service": svc["service"]}
            old = seen.get(r["setting"])
            if old is None or (entry["time"] or 0) > (old["time"] or 0):
                seen[r["setting"]] = entry
    return sorted(seen.values(), key=lambda e: e["time"] or 0, reverse=True)


NODE_COLUMNS = ("state", "online", "serial", "firmware", "heartbeat_age", "frames", "sdo_ok",
                "sdo_timeouts", "sdo_aborts", "bad_responses", "bus_errors", "reboots",
                "sdo_discarded", "sdo_malformed", "retries", "ccl", "last_error")


def _nodes_table(values: dict[str, Any]) -> list[dict[str, Any]]:
    """dbus-superb's per-node diagnostics (``/Status/Nodes``, JSON; docs/superb.md)."""
    raw = values.get("/Status/Nodes")
    if not isinstance(raw, str):
        return []
    try:
        nodes = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(nodes, dict):
        return []
    rows = []
    for node, info in sorted(nodes.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit()
                             else 0):
        if isinstance(info, dict):
            rows.append({"node": node, **{c: info.get(c) for c in NODE_COLUMNS}})
    return rows


def diagnostics(backend: Any) -> dict[str, Any]:
    """What ``GET /api/diagnostics`` returns: every path of every watched service, with ages.

    ``com.victronenergy.canbridge.*`` services (the drivers' own diagnostics: frame counts,
    error counters, SDO timeouts and aborts per node, input ages, last frames) come first.
    """
    services = backend.services()
    services.sort(key=lambda s: (s["class"] != "canbridge", s["service"]))
    out = []
    for s in services:
        rows = [{"path": p, "value": s["values"][p], "text": s["texts"].get(p, ""),
                 "age": s["ages"].get(p)} for p in sorted(s["values"])]
        out.append({"service": s["service"], "class": s["class"], "paths": rows,
                    "process": s["values"].get("/Mgmt/ProcessName"),
                    "nodes": _nodes_table(s["values"])})
    return {"time": backend.clock(), "services": out, "web": backend.stats()}
