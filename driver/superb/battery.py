"""From poll reports to Venus battery values: limits, alarms, derived values, the aggregate.

Pure functions and small classes (no D-Bus, no CAN): :func:`battery_values` turns one node's
:class:`~driver.superb.poller.NodeReport` into ``{D-Bus path: value}`` for a
``com.victronenergy.battery`` service; :class:`Aggregator` combines several batteries into one
virtual battery by the rules of PROTOCOLS.md §4. ``None`` is invalid everywhere; unknown is never
published as 0. Limits follow the shared safety policy (:mod:`driver.safety`): a battery whose
temperature, charge limit or error bits are unknown or too old gets no charge current, one whose
discharge limit is unknown no discharge current, an offline battery no current at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from driver import safety
from driver.superb import objects as objs
from driver.superb.poller import NodeReport


@dataclass(frozen=True)
class Limits:
    """The limit and alarm settings (``/Settings/CanBridge/Superb/...``)."""

    charge_voltage: float = 14.2
    battery_low_voltage: float = 11.5
    max_charge_current: float = 100.0
    max_discharge_current: float = 150.0
    total_max_charge_current: float = 1000.0
    total_max_discharge_current: float = 1000.0
    min_charge_temperature: float = 0.0
    charge_derate_temperature: float = 5.0
    max_charge_temperature: float = 45.0
    max_discharge_temperature: float = 55.0
    alarm_low_voltage: float = 11.8
    alarm_high_voltage: float = 14.8
    alarm_low_soc: int = 10
    alarm_high_temperature: float = 50.0
    alarm_low_temperature: float = -10.0
    installed_capacity: float = 0.0  #: per battery; 0 = what the battery reports
    soc_hold_time: float = 300.0
    limit_ramp_rate: float = 10.0  #: A/s at which the aggregate's limits may rise
    #: age (s) beyond which a safety-relevant value counts as unknown (poll interval + the
    #: ValueMaxAge setting; set by the driver)
    value_max_age: float = math.inf


ALARM_PATHS = (
    "/Alarms/LowVoltage", "/Alarms/HighVoltage", "/Alarms/LowCellVoltage",
    "/Alarms/HighCellVoltage", "/Alarms/HighChargeCurrent", "/Alarms/HighDischargeCurrent",
    "/Alarms/LowSoc", "/Alarms/LowTemperature", "/Alarms/HighTemperature",
    "/Alarms/LowChargeTemperature", "/Alarms/HighChargeTemperature", "/Alarms/InternalFailure",
    "/Alarms/BmsCable",
)

#: Paths of a battery service besides the mandatory ones (all start invalid)
DATA_PATHS = (
    "/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc",
    "/Capacity", "/InstalledCapacity", "/ConsumedAmphours", "/TimeToGo",
    "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent", "/Info/BatteryLowVoltage",
    "/Io/AllowToCharge", "/Io/AllowToDischarge",
    "/System/MinCellVoltage", "/System/MaxCellVoltage", "/System/MinCellTemperature",
    "/System/MaxCellTemperature", "/System/NrOfCellsPerBattery",
    "/History/ChargeCycles", "/History/TotalAhCharged", "/History/AhReturnedLastCharge",
    "/History/AhSinceEqualization",
    *ALARM_PATHS,
)
CVL_PATH = "/Info/MaxChargeVoltage"
#: what makes a service a BMS for DVCC: only the one BMS publishes these
BMS_LIMIT_PATHS = (CVL_PATH, "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent")
#: a battery's own limits on its service when the aggregate is the BMS (custom paths that
#: systemcalc does not read; for the user, MQTT and the tests)
OWN_LIMIT_PATHS = {"/Info/MaxChargeCurrent": "/CanBridge/MaxChargeCurrent",
                   "/Info/MaxDischargeCurrent": "/CanBridge/MaxDischargeCurrent"}

AGGREGATE_PATHS = (
    "/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", "/Dc/0/Temperature", "/Soc",
    "/Capacity", "/InstalledCapacity", "/ConsumedAmphours", "/TimeToGo",
    CVL_PATH, "/Info/MaxChargeCurrent", "/Info/MaxDischargeCurrent", "/Info/BatteryLowVoltage",
    "/Io/AllowToCharge", "/Io/AllowToDischarge",
    "/System/MinCellVoltage", "/System/MaxCellVoltage", "/System/MinVoltageCellId",
    "/System/MaxVoltageCellId", "/System/MinCellTemperature", "/System/MaxCellTemperature",
    "/System/MinTemperatureCellId", "/System/MaxTemperatureCellId",
    "/System/NrOfModulesOnline", "/System/NrOfModulesOffline",
    "/System/NrOfModulesBlockingCharge", "/System/NrOfModulesBlockingDischarge",
    "/System/NrOfBatteries", *ALARM_PATHS,
)


def _round(v: float | None, nd: int) -> float | None:
    return None if v is None else round(float(v), nd)


def _level(*levels: int | None) -> int | None:
    known = [lv for lv in levels if lv is not None]
    return max(known) if known else None


def _below(value: float | None, alarm: float, warn: float) -> int | None:
    if value is None:
        return None
    return 2 if value < alarm else 1 if value < warn else 0


def _above(value: float | None, alarm: float, warn: float) -> int | None:
    if value is None:
        return None
    return 2 if value > alarm else 1 if value > warn else 0


def _bits(errors: int | None, warnings: int | None) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for bit, path in objs.ALARM_BITS:
        err = None if errors is None else (2 if errors >> bit & 1 else 0)
        warn = None if warnings is None else (1 if warnings >> bit & 1 else 0)
        out[path] = _level(err, warn)
    return out


def installed_capacity(report: NodeReport, limits: Limits) -> float | None:
    """The setting when set, else what the battery reports (finite, > 0), else None."""
    if limits.installed_capacity > 0:
        return limits.installed_capacity
    cap = safety.parse_number(report.identity.get("capacity"), safety.CAPACITY)
    return cap if cap is not None and cap > 0 else None


@dataclass(frozen=True)
class ChargeLimits:
    ccl: float
    dcl: float
    allow_charge: bool
    allow_discharge: bool
    reasons: tuple[str, ...]


#: the values that must be known and fresh for charging (besides the temperatures)
REQUIRED_FOR_CHARGE = {"max_charge_current": "battery's charge limit (5021:02)",
                       "errors": "error bits (2004:00)"}
#: temperature objects: the pack's and the lowest/highest cell temperature (2023:01/02)
TEMPERATURE_KEYS = ("temperature", "cell_temperature_min", "cell_temperature_max")


#: physical ranges of the report values (anything else is invalid before any arithmetic)
_RANGES: dict[str, safety.Range] = {
    "voltage": safety.VOLTAGE, "current": safety.CURRENT, "soc": safety.PERCENT,
    "temperature": safety.TEMPERATURE, "cell_temperature_min": safety.TEMPERATURE,
    "cell_temperature_max": safety.TEMPERATURE, "max_charge_current": safety.LIMIT_CURRENT,
    "max_discharge_current": safety.LIMIT_CURRENT, "cell_voltage_min": (0.0, 10.0),
    "cell_voltage_max": (0.0, 10.0), "ah_expended": safety.CAPACITY,
    "ah_returned": safety.CAPACITY, "ah_since_equalization": safety.CAPACITY,
    "total_ah_charged": (0.0, 1e9)}
#: bitfields and counters: non-negative integers
_INTEGERS = ("errors", "warnings", "cycles", "cycles_6050", "awake")


def clean_values(report: NodeReport) -> dict[str, Any]:
    """The report's values parsed once more at this edge (the poller hands over whatever it
    decoded): numbers finite and in their physical range, bitfields and counters non-negative
    integers; anything else ``None``."""
    out: dict[str, Any] = {}
    for key, raw in report.values.items():
        if key in _INTEGERS:
            ok = isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32
            out[key] = int(raw) if ok else None
        else:
            out[key] = safety.parse_number(raw, _RANGES.get(key, safety.ANY))
    return out


def _reading(report: NodeReport, values: dict[str, Any], key: str) -> safety.Reading[float]:
    """A cleaned value as a :class:`~driver.safety.Reading` with the time it was read and the
    age limit of its poll rate (``None``: the caller's, ``Limits.value_max_age``)."""
    v = values.get(key)
    return safety.Reading(None if v is None else float(v), report.stamps.get(key, -math.inf),
                          report.max_ages.get(key))


def charge_limits(report: NodeReport, limits: Limits, now: float | None = None,
                  clean: dict[str, Any] | None = None) -> ChargeLimits:
    """CCL/DCL of one battery, by the shared safety policy (:mod:`driver.safety`).

    Charging needs the battery's own charge limit and error bits known and fresh (each value
    no older than the age limit of its poll rate, ``report.max_ages``; without one
    ``limits.value_max_age``), every temperature the battery has (pack, lowest and highest cell)
    known and fresh, the lowest above ``MinChargeTemperature`` (derated up to
    ``ChargeDerateTemperature``), the highest at most ``MaxChargeTemperature``, and no error bit
    that forbids it. CCL = min(setting, 5021:02) × that factor. DCL = min(setting, 5021:01); 0
    with 5021:01 unknown (fail closed), above ``MaxDischargeTemperature`` (highest) or with an
    error bit that forbids it. ``now`` None: the report's values count as fresh (no clock).
    Offline: 0 and 0. ``clean``: :func:`clean_values` of the same report, if already known.
    """
    if not report.online:
        return ChargeLimits(0.0, 0.0, False, False, ("offline",))
    t = 0.0 if now is None else now
    max_age = math.inf if now is None else limits.value_max_age
    policy = safety.TemperaturePolicy(
        min_charge=limits.min_charge_temperature, derate_to=limits.charge_derate_temperature,
        max_charge=limits.max_charge_temperature,
        max_discharge=limits.max_discharge_temperature)
    # A temperature object the battery does not have (it answered "does not exist") is not
    # unknown, just absent; one it has but that is invalid or too old is unknown.
    values = clean_values(report) if clean is None else clean
    temps = [_reading(report, values, k) for k in TEMPERATURE_KEYS if k not in report.missing]
    if now is None:
        temps = [safety.Reading(r.value, t) for r in temps]
    error_bits = values.get("errors")
    blocks = {} if error_bits is None else {
        f"error bits 0x{error_bits:04X} forbid charging": bool(error_bits & objs.BLOCKS_CHARGE)}
    required = {name: _reading(report, values, key)
                for key, name in REQUIRED_FOR_CHARGE.items()}
    if now is None:
        required = {n: safety.Reading(r.value, t) for n, r in required.items()}
    verdict = safety.charge_verdict(now=t, max_age=max_age, policy=policy, temperatures=temps,
                                    required=required, blocks=blocks)
    reasons = list(verdict.reasons)
    ccl_cap = safety.min_valid(limits.max_charge_current,
                               required["battery's charge limit (5021:02)"].usable(t, max_age))
    ccl = safety.charge_limit(ccl_cap, verdict)
    allow_c = ccl > 0
    # Discharge: the battery's own limit must be known (fail closed), over-temperature by the
    # highest temperature known, the battery's own error bits.
    own_dcl = _reading(report, values, "max_discharge_current").usable(t, max_age)
    allow_d = True
    if own_dcl is None:
        allow_d = False
        reasons.append("battery's discharge limit (5021:01) unknown: no discharging")
    if not safety.discharge_allowed(verdict.highest, policy):
        allow_d = False
        reasons.append(f"{verdict.highest:g} °C: too hot to discharge")
    if error_bits is not None and error_bits & objs.BLOCKS_DISCHARGE:
        allow_d = False
        reasons.append(f"error bits 0x{error_bits:04X} forbid discharging")
    dcl = min(limits.max_discharge_current, own_dcl) if own_dcl is not None else 0.0
    if dcl <= 0:
        allow_d = False
    return ChargeLimits(round(ccl, 1) if allow_c else 0.0, round(dcl, 1) if allow_d else 0.0,
                        allow_c, allow_d, tuple(reasons))


def battery_values(report: NodeReport, limits: Limits, with_cvl: bool = True,
                   now: float | None = None, lim: ChargeLimits | None = None, *,
                   clean: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{path: value}`` for the service of one battery (every path of :data:`DATA_PATHS`);
    ``lim``: :func:`charge_limits` of the same report, limits and ``now`` if already known;
    ``clean``: :func:`clean_values` of the same report, if already known."""
    out: dict[str, Any] = dict.fromkeys(DATA_PATHS)
    if with_cvl:
        out[CVL_PATH] = limits.charge_voltage
    out["/Info/BatteryLowVoltage"] = limits.battery_low_voltage
    if clean is None:
        clean = clean_values(report)
    if lim is None:
        lim = charge_limits(report, limits, now, clean)
    out["/Info/MaxChargeCurrent"] = lim.ccl
    out["/Info/MaxDischargeCurrent"] = lim.dcl
    out["/Io/AllowToCharge"] = int(lim.allow_charge)
    out["/Io/AllowToDischarge"] = int(lim.allow_discharge)
    if not report.online:
        out["/Alarms/BmsCable"] = 2
        return out
    v = clean
    volt, cur, soc, temp = v.get("voltage"), v.get("current"), v.get("soc"), v.get("temperature")
    out["/Dc/0/Voltage"] = _round(volt, 3)
    out["/Dc/0/Current"] = _round(cur, 3)
    out["/Dc/0/Power"] = _round(volt * cur, 1) if volt is not None and cur is not None else None
    out["/Dc/0/Temperature"] = _round(temp, 2)
    out["/Soc"] = _round(soc, 1)
    cap = installed_capacity(report, limits)
    out["/InstalledCapacity"] = cap
    remaining = cap * soc / 100.0 if cap is not None and soc is not None else None
    out["/Capacity"] = _round(remaining, 1)
    if v.get("ah_expended") is not None:
        out["/ConsumedAmphours"] = _round(-abs(float(v["ah_expended"])), 1)
    elif remaining is not None and cap is not None:
        out["/ConsumedAmphours"] = _round(min(0.0, remaining - cap), 1)
    if remaining is not None and cur is not None and cur < -0.1:
        out["/TimeToGo"] = round(remaining / -cur * 3600)
    out["/System/MinCellVoltage"] = _round(v.get("cell_voltage_min"), 3)
    out["/System/MaxCellVoltage"] = _round(v.get("cell_voltage_max"), 3)
    out["/System/MinCellTemperature"] = _round(v.get("cell_temperature_min"), 1)
    out["/System/MaxCellTemperature"] = _round(v.get("cell_temperature_max"), 1)
    out["/System/NrOfCellsPerBattery"] = report.identity.get("cells")
    # Charge cycles: 2014:00 when the battery has it, else 6050:00. What 6050 means comes from
    # the object table (by firmware), never from the length of the answer (docs/superb.md).
    if v.get("cycles") is not None:
        out["/History/ChargeCycles"] = int(v["cycles"])
    elif v.get("cycles_6050") is not None:
        out["/History/ChargeCycles"] = int(v["cycles_6050"])
    if v.get("total_ah_charged") is not None:
        out["/History/TotalAhCharged"] = _round(v["total_ah_charged"], 1)
    out["/History/AhReturnedLastCharge"] = _round(v.get("ah_returned"), 1)
    out["/History/AhSinceEqualization"] = _round(v.get("ah_since_equalization"), 1)
    # Alarms: the battery's own bits, and thresholds from the settings.
    alarms = _bits(v.get("errors"), v.get("warnings"))
    alarms["/Alarms/LowVoltage"] = _level(alarms["/Alarms/LowVoltage"], _below(
        volt, limits.alarm_low_voltage, limits.alarm_low_voltage * 1.02))
    alarms["/Alarms/HighVoltage"] = _level(alarms["/Alarms/HighVoltage"], _above(
        volt, limits.alarm_high_voltage, limits.alarm_high_voltage * 0.98))
    alarms["/Alarms/HighTemperature"] = _level(alarms["/Alarms/HighTemperature"], _above(
        temp, limits.alarm_high_temperature, limits.alarm_high_temperature - 5))
    alarms["/Alarms/LowTemperature"] = _level(alarms["/Alarms/LowTemperature"], _below(
        temp, limits.alarm_low_temperature, limits.alarm_low_temperature + 5))
    if limits.alarm_low_soc > 0 and soc is not None:
        alarms["/Alarms/LowSoc"] = (2 if soc <= limits.alarm_low_soc else
                                    1 if soc <= limits.alarm_low_soc + 5 else 0)
    elif soc is not None:
        alarms["/Alarms/LowSoc"] = 0
    if temp is not None:
        alarms["/Alarms/LowChargeTemperature"] = int(temp <= limits.min_charge_temperature)
        alarms["/Alarms/HighChargeTemperature"] = int(temp > limits.max_charge_temperature)
    alarms["/Alarms/BmsCable"] = 0
    out.update(alarms)
    return out


@dataclass
class Member:
    """One battery as the aggregate sees it."""

    label: str
    report: NodeReport
    values: Mapping[str, Any]
    capacity: float | None
    last_soc: float | None = None
    last_soc_time: float = -math.inf


class Aggregator:
    """One virtual battery over several (PROTOCOLS.md §4). Keeps the ramp state."""

    def __init__(self) -> None:
        self._ccl: float | None = None
        self._dcl: float | None = None
        self._last: float | None = None

    def _ramp(self, old: float | None, new: float, rate: float, dt: float) -> float:
        if old is None or new <= old:
            return new  # restrictions apply at once
        return min(new, old + rate * dt)

    def compute(self, members: Iterable[Member], limits: Limits, now: float) -> dict[str, Any]:
        ms = list(members)
        online = [m for m in ms if m.report.online]
        out: dict[str, Any] = dict.fromkeys(AGGREGATE_PATHS)
        out["/System/NrOfBatteries"] = len(ms)
        out["/System/NrOfModulesOnline"] = len(online)
        out["/System/NrOfModulesOffline"] = len(ms) - len(online)
        out["/Info/BatteryLowVoltage"] = limits.battery_low_voltage
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        if not online:
            out[CVL_PATH] = limits.charge_voltage
            out["/Info/MaxChargeCurrent"] = out["/Info/MaxDischargeCurrent"] = 0.0
            self._ccl = self._dcl = 0.0
            out["/Io/AllowToCharge"] = out["/Io/AllowToDischarge"] = 0
            out["/System/NrOfModulesBlockingCharge"] = len(ms)
            out["/System/NrOfModulesBlockingDischarge"] = len(ms)
            out["/Alarms/BmsCable"] = 2
            out["/Soc"] = self._held_soc(ms, now, limits)
            return out

        def vals(path: str) -> list[float]:
            return [float(m.values[path]) for m in online if m.values.get(path) is not None]

        volts, currents = vals("/Dc/0/Voltage"), vals("/Dc/0/Current")
        out["/Dc/0/Voltage"] = round(sum(volts) / len(volts), 3) if volts else None
        out["/Dc/0/Current"] = round(sum(currents), 3) if len(currents) == len(online) else None
        if out["/Dc/0/Voltage"] is not None and out["/Dc/0/Current"] is not None:
            out["/Dc/0/Power"] = round(out["/Dc/0/Voltage"] * out["/Dc/0/Current"], 1)
        temps = vals("/Dc/0/Temperature")
        out["/Dc/0/Temperature"] = max(temps) if temps else None
        out["/Soc"] = self._held_soc(ms, now, limits)
        caps = [m.capacity for m in online if m.capacity is not None]
        if len(caps) == len(online):
            out["/InstalledCapacity"] = round(sum(caps), 1)
        rem = vals("/Capacity")
        if rem and len(rem) == len(online):
            out["/Capacity"] = round(sum(rem), 1)
        cons = vals("/ConsumedAmphours")
        if cons and len(cons) == len(online):
            out["/ConsumedAmphours"] = round(sum(cons), 1)
        if out["/Capacity"] is not None and out["/Dc/0/Current"] is not None \
                and out["/Dc/0/Current"] < -0.1:
            out["/TimeToGo"] = round(out["/Capacity"] / -out["/Dc/0/Current"] * 3600)
        out[CVL_PATH] = min([limits.charge_voltage, *(
            float(m.values[CVL_PATH]) for m in online if m.values.get(CVL_PATH) is not None)])
        ccl, dcl = self._current_limits(online, limits)
        self._ccl = self._ramp(self._ccl, ccl, limits.limit_ramp_rate, dt)
        self._dcl = self._ramp(self._dcl, dcl, limits.limit_ramp_rate, dt)
        out["/Info/MaxChargeCurrent"] = round(self._ccl, 1)
        out["/Info/MaxDischargeCurrent"] = round(self._dcl, 1)
        block_c = sum(1 for m in online if not m.values.get("/Io/AllowToCharge"))
        block_d = sum(1 for m in online if not m.values.get("/Io/AllowToDischarge"))
        out["/System/NrOfModulesBlockingCharge"] = block_c
        out["/System/NrOfModulesBlockingDischarge"] = block_d
        out["/Io/AllowToCharge"] = int(block_c == 0 and ccl > 0)
        out["/Io/AllowToDischarge"] = int(block_d == 0 and dcl > 0)
        for _kind, path, cell_path in (("V", "/System/MinCellVoltage", "/System/MinVoltageCellId"),
                                      ("V", "/System/MaxCellVoltage", "/System/MaxVoltageCellId"),
                                      ("T", "/System/MinCellTemperature",
                                       "/System/MinTemperatureCellId"),
                                      ("T", "/System/MaxCellTemperature",
                                       "/System/MaxTemperatureCellId")):
            cands = [(float(m.values[path]), m.label) for m in online
                     if m.values.get(path) is not None]
            if cands:
                pick = min(cands) if "Min" in path else max(cands)
                out[path], out[cell_path] = pick
        for path in ALARM_PATHS:
            # a list, not a generator unpacked into the call: CPython builds a tuple from a
            # generator by growing a smaller one, and the grown tuples pile up in its free list
            # for their size (up to 2000 of them, about 0.3 MiB with 16 batteries) without ever
            # being reused (docs/BENCHMARKS.md)
            out[path] = _level(*[m.values.get(path) for m in online])
        out["/Alarms/BmsCable"] = 1 if len(online) < len(ms) else 0
        return out

    def _current_limits(self, online: list[Member], limits: Limits) -> tuple[float, float]:
        """min over batteries of (limit / capacity share), capped by the sum and the totals.

        A battery that carries a third of the capacity takes about a third of the current, so
        the pack may carry its limit divided by its share; any battery blocking a direction
        makes that direction 0.
        """
        results = []
        for key, total in (("/Info/MaxChargeCurrent", limits.total_max_charge_current),
                           ("/Info/MaxDischargeCurrent", limits.total_max_discharge_current)):
            lims = [m.values.get(key) for m in online]
            if any(lim is None or lim <= 0 for lim in lims):
                results.append(0.0)
                continue
            caps = [m.capacity for m in online]
            if any(c is None or c <= 0 for c in caps):
                # Without capacities assume equal shares: the lowest limit times the count.
                best = min(float(x) for x in lims if x is not None) * len(lims)
            else:
                total_cap = sum(c for c in caps if c is not None)
                best = min(float(lim) / (float(c) / total_cap)
                           for lim, c in zip(lims, caps, strict=True)
                           if lim is not None and c is not None)
            results.append(max(0.0, min(best, sum(float(x) for x in lims if x is not None),
                                        total)))
        return results[0], results[1]

    @staticmethod
    def _held_soc(ms: list[Member], now: float, limits: Limits) -> float | None:
        """SoC weighted by capacity; a dropped battery's last SoC counts for a grace period."""
        num = den = 0.0
        for m in ms:
            soc = m.values.get("/Soc") if m.report.online else None
            if soc is None and m.last_soc is not None \
                    and now - m.last_soc_time <= limits.soc_hold_time:
                soc = m.last_soc
            if soc is None:
                continue
            weight = m.capacity if m.capacity else 1.0
            num += float(soc) * weight
            den += weight
        return round(num / den, 1) if den else None
