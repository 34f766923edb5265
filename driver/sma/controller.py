"""The Sunny Island's external BMS brain: charge controller and safety ladder (pure).

No D-Bus, no CAN, no threads: :class:`Controller` takes an immutable :class:`Inputs` snapshot
and a clock, and returns the BMS values to send (:class:`~driver.sma.frames.BmsValues`) plus at
most one start/stop command. Every value in :class:`Inputs` was parsed at the edge
(:mod:`driver.safety`): a number is finite or ``None``; nothing here does arithmetic on ``None``.

:meth:`Controller.step` runs in stages, each a small function tested on its own:

1. **inputs** (:func:`implausible_reason`, :meth:`Controller._accept`): is the newest battery
   reading usable data, implausible, or no data at all (a value missing: it just ages)?
2. **level** (:func:`ladder`): the safety ladder by the age of the last good data.
3. **limits** (:func:`caps`, :func:`charge_verdict`, :func:`discharge_cap`): the smallest of
   every cap; the shared charging rule (temperatures known, not cold, not hot; safety-relevant
   values valid and fresh; no blocking alarm); discharge on the ladder.
4. **shaping** (:func:`taper`, :func:`slew`): taper toward the target voltage, slew-limited rises.
5. **frames** (:func:`build_values`): the BMS values, every field finite.

Safety ladder (PROTOCOLS.md §2), by the age of the last good battery data (measured from the
process start while no data has arrived yet):

======== ======================= ============================================================
level    when                    what is sent
======== ======================= ============================================================
STARTUP  no data yet, young      StartupSoc, StaleChargeCurrent, StaleDischargeCurrent, float
                                 voltage, warning bit
NORMAL   fresh and plausible     the charge controller's limits
STALE    age >= StaleWarningTime SoC held, CCL <= StaleChargeCurrent, DCL <= StaleDischarge-
                                 Current, CVL <= float voltage, warning bits
ALARM    age >= StaleAlarmTime,  CCL 0, DCL <= StaleDischargeCurrent, alarm bits
         or implausible data
STOPPED  age >= StopTime         CCL 0, DCL 0, alarm bits, 0x35C stop (if UseStopStart),
                                 repeated; starts (repeated) when good data return until the
                                 Sunny Island reports Run
======== ======================= ============================================================

Implausible battery data (SoC outside 0-100, voltage outside the Sunny Island's 41-63 V, a
voltage that differs from the Sunny Island's own 0x305 voltage by more than
PlausibleVoltageBand) are never used: the last good data stay, ageing, and the level is at
least ALARM while they last. Currents are never compared: 0x305 is the Sunny Island's own DC
current, and solar chargers or DC loads on the same battery make it differ from the battery's
in size and sign all day (docs/sma.md).

Charge controller (NORMAL only), all against the CVL actually sent (the smallest of the phase
target, the battery's and DVCC's charge-voltage caps): BULK -> ABSORPTION when the voltage
enters the taper band below that CVL; in ABSORPTION the timer runs only while the voltage is at
the target (inside the taper band), and the tail current ends it only then (held for
ConditionTime); AbsorptionTime of time at target also ends it. FLOAT -> BULK when the voltage
stays below the re-bulk voltage for ConditionTime or the SoC falls to RebulkSoc. In the taper
band the charge current limit falls linearly to 0 at the CVL; rises are slew-limited, falls
apply at once, and a limit below MinCurrentStep is sent as 0.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from driver import safety
from driver.safety import Reading, TemperaturePolicy
from driver.sma.frames import BmsValues

SI_MIN_V = 41.0
SI_MAX_V = 63.0
SI_MIN_DVL = 41.0
SI_MAX_DVL = 48.0
#: a Sunny Island 0x305/0x307 frame older than this is not used (plausibility, temperature,
#: Run flag)
SI_FRESH_S = 5.0
#: how often a stop command is repeated while STOPPED (a lost frame must not leave it running)
STOP_REPEAT_S = 5.0


#: the ladder levels are the shared policy's
Level = safety.Level


class Phase(enum.IntEnum):
    """Charge phase, numbered like Venus's /VebusChargeState."""

    BULK = 1
    ABSORPTION = 2
    FLOAT = 3


#: Venus /State for each charge phase
PHASE_STATE = {Phase.BULK: 3, Phase.ABSORPTION: 4, Phase.FLOAT: 5}

# battery service /Alarms/* -> 0x35A item
ALARM_MAP = {
    "LowVoltage": "LowVoltage", "HighVoltage": "HighVoltage",
    "LowCellVoltage": "LowVoltage", "HighCellVoltage": "HighVoltage",
    "HighChargeCurrent": "ChargeOvercurrent", "HighDischargeCurrent": "DischargeOvercurrent",
    "LowTemperature": "LowTemperature", "HighTemperature": "HighTemperature",
    "LowChargeTemperature": "ChargeLowTemperature",
    "HighChargeTemperature": "ChargeHighTemperature",
    "InternalFailure": "BmsInternal", "BmsCable": "General", "CellImbalance": "CellImbalance",
}
#: battery alarms (level 2) that block charging / discharging outright
CHARGE_BLOCKING = {"HighVoltage", "HighCellVoltage", "HighChargeCurrent",
                   "LowChargeTemperature", "HighChargeTemperature", "HighTemperature",
                   "InternalFailure"}
DISCHARGE_BLOCKING = {"LowVoltage", "LowCellVoltage", "HighDischargeCurrent",
                      "HighTemperature", "InternalFailure"}


class ConfigError(ValueError):
    """Inconsistent settings; the message names them."""


@dataclass(frozen=True)
class Config:
    """Every threshold, from the ``/Settings/CanBridge/Sma/*`` settings (keys as field meta)."""

    absorption_voltage: float = field(default=56.8, metadata={"key": "AbsorptionVoltage"})
    float_voltage: float = field(default=54.0, metadata={"key": "FloatVoltage"})
    rebulk_voltage: float = field(default=52.0, metadata={"key": "RebulkVoltage"})
    rebulk_soc: float = field(default=90, metadata={"key": "RebulkSoc"})
    absorption_time: float = field(default=60.0, metadata={"key": "AbsorptionTime"})  # min
    tail_current: float = field(default=10.0, metadata={"key": "TailCurrent"})
    condition_time: float = field(default=30.0, metadata={"key": "ConditionTime"})  # s
    max_charge_current: float = field(default=100.0, metadata={"key": "MaxChargeCurrent"})
    max_discharge_current: float = field(default=200.0,
                                         metadata={"key": "MaxDischargeCurrent"})
    discharge_voltage: float = field(default=44.8, metadata={"key": "DischargeVoltage"})
    taper_band: float = field(default=0.4, metadata={"key": "TaperBand"})
    slew_rate: float = field(default=5.0, metadata={"key": "CurrentSlewRate"})
    min_current_step: float = field(default=1.0, metadata={"key": "MinCurrentStep"})
    min_charge_temperature: float = field(default=0.0,
                                          metadata={"key": "MinChargeTemperature"})
    charge_derate_temperature: float = field(default=5.0,
                                             metadata={"key": "ChargeDerateTemperature"})
    max_charge_temperature: float = field(default=45.0,
                                          metadata={"key": "MaxChargeTemperature"})
    max_discharge_temperature: float = field(default=55.0,
                                             metadata={"key": "MaxDischargeTemperature"})
    soc_rate: float = field(default=0.5, metadata={"key": "SocRateLimit"})
    stale_warning_time: float = field(default=10.0, metadata={"key": "StaleWarningTime"})
    stale_alarm_time: float = field(default=25.0, metadata={"key": "StaleAlarmTime"})
    stop_time: float = field(default=40.0, metadata={"key": "StopTime"})
    stale_charge_current: float = field(default=5.0, metadata={"key": "StaleChargeCurrent"})
    stale_discharge_current: float = field(default=1200.0,
                                           metadata={"key": "StaleDischargeCurrent"})
    startup_soc: float = field(default=50, metadata={"key": "StartupSoc"})
    use_stop_start: bool = field(default=True, metadata={"key": "UseStopStart"})
    plausible_voltage_band: float = field(default=2.5,
                                          metadata={"key": "PlausibleVoltageBand"})
    plausible_voltage_time: float = field(default=10.0,
                                          metadata={"key": "PlausibleVoltageTime"})
    capacity: float = field(default=0.0, metadata={"key": "BatteryCapacity"})
    start_repeat: float = field(default=5.0, metadata={"key": "StartRepeatInterval"})
    dvcc_timeout: float = field(default=60.0, metadata={"key": "DvccTimeout"})
    frozen_time: float = field(default=3600.0, metadata={"key": "FrozenDataTime"})

    @classmethod
    def from_settings(cls, get: Callable[[str], Any]) -> Config:
        """Build from a settings getter taking keys such as ``Sma/FloatVoltage``."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f"Sma/{f.metadata['key']}")
            if f.type in ("bool", bool):
                kw[f.name] = bool(safety.parse_flag(raw))
                continue
            v = safety.parse_number(raw)
            if v is None:
                raise ConfigError(f"setting Sma/{f.metadata['key']} = {raw!r} is not a number")
            kw[f.name] = v
        cfg = cls(**kw)
        cfg.check()
        return cfg

    @property
    def temperature_policy(self) -> TemperaturePolicy:
        """The shared temperature rule's thresholds."""
        return TemperaturePolicy(min_charge=self.min_charge_temperature,
                                 derate_to=self.charge_derate_temperature,
                                 max_charge=self.max_charge_temperature,
                                 max_discharge=self.max_discharge_temperature)

    def check(self) -> None:
        """Refuse inconsistent thresholds, naming the settings involved."""
        pairs = [
            ("FloatVoltage", self.float_voltage, "AbsorptionVoltage",
             self.absorption_voltage, False),
            ("RebulkVoltage", self.rebulk_voltage, "FloatVoltage", self.float_voltage, True),
            ("DischargeVoltage", self.discharge_voltage, "RebulkVoltage",
             self.rebulk_voltage, True),
            ("MinChargeTemperature", self.min_charge_temperature, "ChargeDerateTemperature",
             self.charge_derate_temperature, True),
            ("ChargeDerateTemperature", self.charge_derate_temperature,
             "MaxChargeTemperature", self.max_charge_temperature, True),
            ("StaleWarningTime", self.stale_warning_time, "StaleAlarmTime",
             self.stale_alarm_time, True),
            ("StaleAlarmTime", self.stale_alarm_time, "StopTime", self.stop_time, True),
            ("StaleChargeCurrent", self.stale_charge_current, "MaxChargeCurrent",
             self.max_charge_current, False),
        ]
        bad = [f"{a} ({va:g}) must be {'below' if strict else 'at most'} {b} ({vb:g})"
               for a, va, b, vb, strict in pairs if (va >= vb if strict else va > vb)]
        if bad:
            raise ConfigError("inconsistent Sunny Island settings: " + "; ".join(bad))


@dataclass(frozen=True)
class Battery:
    """One reading of the battery source, every value parsed at the edge (finite or None).

    ``at`` is the monotonic time the source answered with this reading; ``updated`` the time
    its measured values last changed (the source's own update; None = ``at``), so a service
    that is alive but whose values never move can be told apart. ``invalid`` names the
    safety-relevant paths the source publishes with an invalid value (each blocks charging).
    ``allow_to_charge`` None = published but invalid.
    """

    at: float
    voltage: float | None
    current: float | None          # + = charging
    temperature: float | None
    soc: float | None
    soh: float | None = None
    capacity: float | None = None  # Ah (installed capacity)
    max_charge_voltage: float | None = None
    max_charge_current: float | None = None
    max_discharge_current: float | None = None
    battery_low_voltage: float | None = None
    allow_to_charge: bool | None = True
    allow_to_discharge: bool | None = True
    alarms: Mapping[str, int] = field(default_factory=dict)
    product: str = ""
    cell_temperature_min: float | None = None
    cell_temperature_max: float | None = None
    invalid: frozenset[str] = frozenset()
    updated: float | None = None

    @property
    def complete(self) -> bool:
        """Voltage, current and SoC all present (else the reading is no data: it ages)."""
        return None not in (self.voltage, self.current, self.soc)


@dataclass(frozen=True)
class SiMeasurement:
    """The Sunny Island's own battery measurement (0x305, received at ``at``; current + =
    charging) and its Run flag (0x307, received at ``run_at``)."""

    at: float
    voltage: float | None
    current: float | None
    temperature: float | None = None
    run: bool | None = None
    run_at: float | None = None


DVCC_FIELDS = ("max_charge_voltage", "max_charge_current", "max_discharge_current",
               "battery_low_voltage", "dc_max_charge_current")


@dataclass(frozen=True)
class Dvcc:
    """Limits Venus (DVCC) wrote into the vebus service; None = not written.

    ``written`` holds the monotonic time of each field's last write: a value systemcalc has
    not refreshed for ``DvccTimeout`` no longer applies (:meth:`active`). Without a time
    (tests, hand-made snapshots) a value always applies.
    """

    max_charge_voltage: float | None = None
    max_charge_current: float | None = None
    max_discharge_current: float | None = None
    battery_low_voltage: float | None = None
    dc_max_charge_current: float | None = None
    written: Mapping[str, float] = field(default_factory=dict)

    def active(self, now: float, timeout: float) -> Dvcc:
        """Only the values refreshed within ``timeout`` seconds."""
        kw: dict[str, Any] = {}
        for name in DVCC_FIELDS:
            at = self.written.get(name)
            v = getattr(self, name)
            kw[name] = v if at is None or now - at <= timeout else None
        return Dvcc(**kw)

    def expired(self, now: float, timeout: float) -> tuple[str, ...]:
        """Names of values written once but not refreshed within ``timeout``."""
        return tuple(n for n in DVCC_FIELDS if getattr(self, n) is not None
                     and (at := self.written.get(n)) is not None and now - at > timeout)


@dataclass(frozen=True)
class Inputs:
    """Everything the controller looks at, as one immutable snapshot."""

    config: Config
    battery: Battery | None = None
    si: SiMeasurement | None = None
    dvcc: Dvcc = field(default_factory=Dvcc)
    mode_on: bool = True          # the user's /Mode (3 on / 4 off)


@dataclass(frozen=True)
class Output:
    """What one controller step decided."""

    values: BmsValues
    level: Level
    phase: Phase
    command: bool | None            # True start, False stop, None nothing
    data_age: float                 # s since the last good battery data (or start)
    implausible: str = ""           # why the latest battery data were refused
    absorption_done: bool = False
    reasons: tuple[str, ...] = ()   # what limited the charge current
    start_commands: int = 0         # start commands sent so far (diagnostics)
    dvcc_expired: tuple[str, ...] = ()


# -- stage 1: inputs --------------------------------------------------------------------------

def voltage_mismatch(b: Battery, si: SiMeasurement | None, cfg: Config, now: float) -> str:
    """The battery's voltage against the Sunny Island's own 0x305 voltage: same DC bus, so
    they agree within PlausibleVoltageBand (cable drop, sensor tolerance). Compared only when
    both are fresh (an old reading is the ladder's business); '' when they agree or cannot
    be compared. The caller requires a mismatch to last PlausibleVoltageTime (a load step
    moves the voltage between two readings taken a second apart)."""
    if (b.voltage is None or si is None or si.voltage is None
            or not math.isfinite(si.voltage) or now - si.at > SI_FRESH_S
            or now - b.at > SI_FRESH_S):
        return ""
    if abs(b.voltage - si.voltage) > cfg.plausible_voltage_band:
        return (f"battery voltage {b.voltage:g} V differs from the Sunny Island's "
                f"{si.voltage:g} V by more than {cfg.plausible_voltage_band:g} V")
    return ""


def implausible_reason(b: Battery, si: SiMeasurement | None, cfg: Config, now: float) -> str:
    """Why a complete battery reading cannot be used at once ('' if it can): SoC outside
    0-100, voltage outside the Sunny Island's range. (The voltage comparison with the Sunny
    Island, :func:`voltage_mismatch`, needs time; currents are never compared.)"""
    if b.soc is None or b.voltage is None or b.current is None:
        return "incomplete reading"
    if not all(math.isfinite(x) for x in (b.soc, b.voltage, b.current)):
        return "non-finite values"
    if not 0.0 <= b.soc <= 100.0:
        return f"state of charge {b.soc:g} % outside 0-100"
    if not SI_MIN_V <= b.voltage <= SI_MAX_V:
        return f"voltage {b.voltage:g} V outside {SI_MIN_V:g}-{SI_MAX_V:g} V"
    return ""


# -- stage 2: level ---------------------------------------------------------------------------

def ladder(age: float, had_data: bool, implausible: bool, cfg: Config) -> Level:
    """The safety ladder level; implausible data are at least ALARM."""
    level = safety.ladder_level(age, cfg.stale_warning_time, cfg.stale_alarm_time,
                                cfg.stop_time, had_data)
    if implausible and had_data:
        level = max(level, Level.ALARM)
    return Level(level)


# -- stage 3: limits --------------------------------------------------------------------------

@dataclass(frozen=True)
class Caps:
    """The smallest of every cap that applies (phase-independent)."""

    cvl: float      # charge voltage: absorption setting, battery, DVCC
    ccl: float      # charge current: setting, battery, DVCC (both paths)
    dcl: float      # discharge current: setting, battery, DVCC
    dvl: float      # discharge voltage: the highest floor, clamped to 41-48 V


def caps(g: Battery | None, dvcc: Dvcc, cfg: Config) -> Caps:
    """Stage 3a: the caps from the settings, the last good battery data and active DVCC."""
    cvl = safety.min_valid(cfg.absorption_voltage, dvcc.max_charge_voltage,
                           g.max_charge_voltage if g else None)
    ccl = safety.min_valid(cfg.max_charge_current, dvcc.max_charge_current,
                           dvcc.dc_max_charge_current, g.max_charge_current if g else None)
    dcl = safety.min_valid(cfg.max_discharge_current, dvcc.max_discharge_current,
                           g.max_discharge_current if g else None)
    floors = [v for v in (cfg.discharge_voltage, dvcc.battery_low_voltage,
                          g.battery_low_voltage if g else None)
              if v is not None and math.isfinite(v)]
    dvl = max(SI_MIN_DVL, min(SI_MAX_DVL, max(floors)))
    return Caps(cvl=cvl if cvl is not None else cfg.float_voltage,
                ccl=max(0.0, ccl) if ccl is not None else 0.0,
                dcl=max(0.0, dcl) if dcl is not None else 0.0, dvl=dvl)


def battery_temperatures(g: Battery, si: SiMeasurement | None,
                         now: float) -> tuple[list[Reading[float]], str]:
    """The temperatures the charging rule uses and where they come from.

    The battery's own (pack and, if it reports them, lowest/highest cell); without any, the
    Sunny Island's 0x305 battery temperature if fresh; else none (= no charging).
    """
    temps = [Reading(t, g.at) for t in (g.temperature, g.cell_temperature_min,
                                        g.cell_temperature_max) if t is not None]
    if temps:
        return temps, "battery"
    if (si is not None and si.temperature is not None and math.isfinite(si.temperature)
            and now - si.at <= SI_FRESH_S):
        return [Reading(si.temperature, si.at)], "Sunny Island"
    return [], "none"


def charge_verdict(g: Battery, si: SiMeasurement | None, cfg: Config,
                   now: float) -> safety.ChargeVerdict:
    """Stage 3b: the shared charging rule applied to the last good battery data."""
    temps, _ = battery_temperatures(g, si, now)
    required = {name: safety.invalid(g.at) for name in sorted(g.invalid)}
    blocks = {"battery disallows charging": g.allow_to_charge is False}
    for name, lvl in g.alarms.items():
        if lvl >= 2 and name in CHARGE_BLOCKING:
            blocks[f"battery alarm {name}"] = True
    if g.updated is not None and now - g.updated > cfg.frozen_time:
        blocks[f"battery values unchanged for {(now - g.updated) / 60:.0f} min"] = True
    return safety.charge_verdict(now=now, max_age=cfg.stale_alarm_time,
                                 policy=cfg.temperature_policy, temperatures=temps,
                                 required=required, blocks=blocks)


def discharge_cap(level: Level, g: Battery | None, dcl: float, highest: float | None,
                  cfg: Config) -> tuple[float, bool]:
    """Stage 3c: DCL on the ladder, 0 when the battery forbids it or is too hot.

    Returns (DCL, too hot). An invalid value does not cut discharging (the ladder does).
    """
    out = safety.discharge_limit(level, dcl, cfg.stale_discharge_current)
    hot = not safety.discharge_allowed(highest, cfg.temperature_policy)
    if g is not None and level in (Level.NORMAL, Level.STALE) and (
            hot or g.allow_to_discharge is False or any(
                lvl >= 2 and name in DISCHARGE_BLOCKING for name, lvl in g.alarms.items())):
        out = 0.0
    return out, hot


# -- stage 4: shaping -------------------------------------------------------------------------

def taper(ccl: float, voltage: float | None, cvl: float, band: float) -> float:
    """CCL falling linearly to 0 over the last ``band`` volts below ``cvl``."""
    if voltage is None or not math.isfinite(voltage) or band <= 0:
        return ccl
    if voltage < cvl - band:
        return ccl
    return ccl * max(0.0, min(1.0, (cvl - voltage) / band))


def slew(prev: float, target: float, rate: float, dt: float, min_step: float) -> float:
    """Rises limited to ``rate`` A/s, falls at once, below ``min_step`` -> 0; never negative."""
    t = target if math.isfinite(target) else 0.0
    t = max(0.0, t)
    if t > prev:
        t = min(t, prev + rate * dt)
    return 0.0 if t < min_step else t


# -- stage 5: frames --------------------------------------------------------------------------

def _fin(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def build_values(*, cvl: float, ccl: float, dcl: float, dvl: float, soc: float,
                 g: Battery | None, si: SiMeasurement | None, temperature: float | None,
                 alarms: set[str], warnings: set[str], cfg: Config) -> BmsValues:
    """The BMS values; every number finite (defence in depth behind the edge parsers)."""
    soc = soc if math.isfinite(soc) else float(cfg.startup_soc)
    voltage = _fin(g.voltage) if g is not None else None
    if voltage is None and si is not None:
        voltage = _fin(si.voltage)
    soh = _fin(g.soh) if g is not None else None
    capacity = _fin(cfg.capacity) or ((_fin(g.capacity) or 0.0) if g is not None else 0.0)
    return BmsValues(
        cvl=round(max(SI_MIN_V, min(SI_MAX_V, cvl)), 1),
        ccl=round(max(0.0, ccl), 1) if math.isfinite(ccl) else 0.0,
        dcl=round(max(0.0, dcl), 1) if math.isfinite(dcl) else 0.0,
        dvl=round(dvl, 1), soc=max(0, min(100, round(soc))),
        soh=max(0, min(100, round(soh))) if soh is not None else None,
        soc_hr=round(max(0.0, min(soc, 100.0)), 2),
        voltage=voltage, current=_fin(g.current) if g is not None else None,
        temperature=_fin(temperature),
        alarms=frozenset(alarms), warnings=frozenset(warnings),
        manufacturer="CanBrdg", battery_type=0, bms_version=1,
        capacity_ah=max(0.0, min(65535.0, capacity)))


def safe_values(soc: float | None, cfg: Config) -> BmsValues:
    """The fixed safe frame set: CCL 0, DCL on the stale step, the last SoC sent, alarm bit.

    Sent when building the normal set failed for any reason (no input can silence 0x351).
    """
    s = soc if soc is not None and math.isfinite(soc) else float(cfg.startup_soc)
    try:
        dcl = max(0.0, min(float(cfg.stale_discharge_current), 3276.0))
        cvl = max(SI_MIN_V, min(SI_MAX_V, float(cfg.float_voltage)))
        dvl = max(SI_MIN_DVL, min(SI_MAX_DVL, float(cfg.discharge_voltage)))
    except (TypeError, ValueError):
        dcl, cvl, dvl = 0.0, 54.0, 44.8
    if not all(math.isfinite(x) for x in (dcl, cvl, dvl)):
        dcl, cvl, dvl = 0.0, 54.0, 44.8
    return BmsValues(cvl=round(cvl, 1), ccl=0.0, dcl=round(dcl, 1), dvl=round(dvl, 1),
                     soc=max(1, min(100, round(s))), soh=None, soc_hr=None, voltage=None,
                     current=None, temperature=None, alarms=frozenset({"General"}),
                     warnings=frozenset({"General"}), manufacturer="CanBrdg", battery_type=0,
                     bms_version=1, capacity_ah=0.0)


class Controller:
    """Stateful controller; call :meth:`step` on every send tick (and on input changes)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.phase = Phase.BULK
        self.absorption_done = False
        self.good: Battery | None = None
        self.good_at: float | None = None
        self.level = Level.STARTUP
        self._last_step: float | None = None
        self._ccl_sent = 0.0
        self._soc_sent: float | None = None
        self._phase_since = self.started
        self._abs_at_target = 0.0      # s of absorption spent at the target voltage
        self._cond_since: float | None = None
        self._stop_sent_at: float | None = None
        self._stopped = False         # we commanded a stop that is not yet undone
        self._want_start = False      # start until the Sunny Island reports Run
        self._first_start_at: float | None = None
        self._start_sent_at: float | None = None
        self.start_commands = 0
        self._mismatch_since: float | None = None

    @property
    def soc_sent(self) -> float | None:
        """The SoC last sent (for the safe frame set)."""
        return self._soc_sent

    # -- helpers ---------------------------------------------------------------------------
    def _set_phase(self, p: Phase, now: float) -> None:
        if p != self.phase:
            self.phase = p
            self._phase_since = now
            self._cond_since = None
            self._abs_at_target = 0.0

    def _held(self, cond: bool, now: float, need: float) -> bool:
        """True once ``cond`` has held continuously for ``need`` seconds."""
        if not cond:
            self._cond_since = None
            return False
        if self._cond_since is None:
            self._cond_since = now
        return now - self._cond_since >= need

    def _charge_phase(self, g: Battery, cfg: Config, cvl_abs: float, dt: float,
                      now: float) -> None:
        """Phase transitions against the CVL actually sent (``cvl_abs`` in bulk/absorption)."""
        if g.voltage is None or g.current is None or g.soc is None:
            return
        v, i, soc = g.voltage, g.current, g.soc
        at_target = v >= cvl_abs - cfg.taper_band
        if self.phase == Phase.BULK and at_target:
            self._set_phase(Phase.ABSORPTION, now)
            return
        if self.phase == Phase.ABSORPTION:
            if at_target:
                self._abs_at_target += dt
            timed_out = self._abs_at_target >= cfg.absorption_time * 60.0
            tail = self._held(at_target and i < cfg.tail_current, now, cfg.condition_time)
            if timed_out or tail:
                self.absorption_done = True
                self._set_phase(Phase.FLOAT, now)
        elif self.phase == Phase.FLOAT:
            low_soc = cfg.rebulk_soc > 0 and soc <= cfg.rebulk_soc
            if self._held(v < cfg.rebulk_voltage, now, cfg.condition_time) or low_soc:
                self.absorption_done = False
                self._set_phase(Phase.BULK, now)

    @staticmethod
    def temperature_factor(t: float | None, cfg: Config) -> float:
        """The shared rule for one temperature: unknown (None) = 0, no charging."""
        return safety.temperature_factor(t, t, cfg.temperature_policy)[0]

    def _soc(self, target: float, dt: float, cfg: Config, cap100: bool) -> float:
        if cap100 and target > 99.0:
            target = 99.0
        if self._soc_sent is None:
            # the first real reading replaces the start-up placeholder at once
            self._soc_sent = target
        else:
            step = cfg.soc_rate * dt
            self._soc_sent += max(-step, min(step, target - self._soc_sent))
        return self._soc_sent

    def _accept(self, b: Battery | None, si: SiMeasurement | None, cfg: Config,
                now: float) -> str:
        """Stage 1: take a complete, plausible reading as the good data; return why not."""
        if b is None or not b.complete:
            return ""  # no data: it just ages
        why = implausible_reason(b, si, cfg, now)
        if not why:
            mismatch = voltage_mismatch(b, si, cfg, now)
            if not mismatch:
                self._mismatch_since = None
            else:
                if self._mismatch_since is None:
                    self._mismatch_since = now
                if now - self._mismatch_since >= cfg.plausible_voltage_time:
                    why = mismatch
        if not why and (self.good_at is None or b.at >= self.good_at):
            self.good, self.good_at = b, b.at
        return why

    # -- the step --------------------------------------------------------------------------
    def step(self, inp: Inputs) -> Output:
        """One controller step (stages 1-5, see the module docstring)."""
        cfg = inp.config
        now = self.clock()
        dt = 0.0 if self._last_step is None else max(0.0, min(5.0, now - self._last_step))
        self._last_step = now
        si = inp.si
        why = self._accept(inp.battery, si, cfg, now)
        age = now - (self.good_at if self.good_at is not None else self.started)
        level = ladder(age, self.good is not None, bool(why), cfg)
        self.level = level

        alarms: set[str] = set()
        warnings: set[str] = set()
        reasons: list[str] = []
        g = self.good
        dvcc = inp.dvcc.active(now, cfg.dvcc_timeout)
        cap = caps(g, dvcc, cfg)
        highest: float | None = None
        temperature: float | None = None
        if g is not None:
            temps, _src = battery_temperatures(g, si, now)
            temperature = temps[0].value if temps else None
        if level in (Level.NORMAL, Level.STALE) and g is not None:
            if level == Level.NORMAL:
                self._charge_phase(g, cfg, min(cap.cvl, cfg.absorption_voltage), dt, now)
            target = cfg.absorption_voltage if self.phase != Phase.FLOAT else cfg.float_voltage
            cvl = min(cap.cvl, target)
            verdict = charge_verdict(g, si, cfg, now)
            highest = verdict.highest
            ccl = safety.charge_limit(cap.ccl, verdict)
            reasons.extend(verdict.reasons)
            lo = verdict.lowest
            if lo is None or lo <= cfg.charge_derate_temperature:
                warnings.add("ChargeLowTemperature")
            if highest is not None and highest > cfg.max_charge_temperature:
                warnings.add("ChargeHighTemperature")
            before = ccl
            ccl = taper(ccl, g.voltage, cvl, cfg.taper_band)
            if ccl < before:
                reasons.append("taper")
            for name, lvl in g.alarms.items():
                item = ALARM_MAP.get(name)
                if item is not None and lvl:
                    (alarms if lvl >= 2 else warnings).add(item)
            dcl, hot = discharge_cap(level, g, cap.dcl, highest, cfg)
            if hot:
                alarms.add("HighTemperature")
            if level == Level.STALE:
                cvl = min(cvl, cfg.float_voltage)
                ccl = min(ccl, cfg.stale_charge_current)
                warnings.add("General")
                reasons.append("battery data stale")
                soc = self._soc_sent if self._soc_sent is not None else float(cfg.startup_soc)
            else:
                soc = self._soc(float(g.soc or 0.0), dt, cfg, not self.absorption_done)
        else:
            cvl = min(cap.cvl, cfg.float_voltage)
            soc = self._soc_sent if self._soc_sent is not None else float(cfg.startup_soc)
            dcl, _ = discharge_cap(level, g, cap.dcl, None, cfg)
            if level == Level.STARTUP:
                ccl = min(cap.ccl, cfg.stale_charge_current)
                warnings.add("General")
                reasons.append("waiting for battery data")
            elif level == Level.ALARM:
                ccl = 0.0
                alarms.add("General")
                reasons.append("battery data " + (why or "stale too long"))
            else:
                ccl = 0.0
                alarms.add("General")
                reasons.append("stopped: battery data stale")
        if why:
            warnings.add("General")
        # A newer reading that cannot be used as data (a value missing, or implausible) still
        # restricts charging at once (PROTOCOLS.md §4: restrictions apply at once): the battery
        # service's charge limit, its allow-to-charge flag, charge-blocking alarms, invalid
        # safety values. Discharge is left to the ladder, so a communication loss does not
        # drop the loads at once.
        r = inp.battery
        if r is not None and r is not g:
            limit = self._charge_restriction(r)
            if limit < ccl:
                ccl = limit
                reasons.append("latest battery reading restricts charging")

        ccl = slew(self._ccl_sent, ccl, cfg.slew_rate, dt, cfg.min_current_step)
        self._ccl_sent = ccl
        command = self._command(level, inp.mode_on, si, cfg, now)
        values = build_values(cvl=cvl, ccl=ccl, dcl=dcl, dvl=cap.dvl, soc=soc, g=g, si=si,
                              temperature=temperature, alarms=alarms, warnings=warnings,
                              cfg=cfg)
        return Output(values=values, level=level, phase=self.phase, command=command,
                      data_age=age, implausible=why, absorption_done=self.absorption_done,
                      reasons=tuple(reasons), start_commands=self.start_commands,
                      dvcc_expired=inp.dvcc.expired(now, cfg.dvcc_timeout))

    @staticmethod
    def _charge_restriction(r: Battery) -> float:
        """The charge current a reading allows at most (inf when it says nothing)."""
        if r.allow_to_charge is not True or r.invalid or any(
                lvl >= 2 and name in CHARGE_BLOCKING for name, lvl in r.alarms.items()):
            return 0.0
        return r.max_charge_current if r.max_charge_current is not None else math.inf

    def _command(self, level: Level, mode_on: bool, si: SiMeasurement | None, cfg: Config,
                 now: float) -> bool | None:
        """Start/stop decisions: the ladder's stop (if enabled) and the user's /Mode.

        After a stop, a start is sent when good data return and repeated every
        StartRepeatInterval until a 0x307 received after the first start reports Run.
        """
        want_stop = not mode_on or (cfg.use_stop_start and level == Level.STOPPED)
        if want_stop:
            self._want_start = False
            if self._stop_sent_at is None or now - self._stop_sent_at >= STOP_REPEAT_S:
                self._stop_sent_at = now
                self._stopped = True
                return False
            return None
        self._stop_sent_at = None
        if self._stopped and level == Level.NORMAL:
            self._stopped = False
            self.mode_started()
        if not self._want_start:
            return None
        if (si is not None and si.run and si.run_at is not None
                and self._first_start_at is not None and si.run_at > self._first_start_at):
            self._want_start = False  # the Sunny Island runs again
            return None
        if self._start_sent_at is None or now - self._start_sent_at >= cfg.start_repeat:
            self._start_sent_at = now
            if self._first_start_at is None:
                self._first_start_at = now
            self.start_commands += 1
            return True
        return None

    def mode_started(self) -> None:
        """Start the Sunny Island (the user set /Mode on, or data returned after our stop)."""
        self._want_start = True
        self._first_start_at = None
        self._start_sent_at = None


def with_config(inp: Inputs, cfg: Config) -> Inputs:
    """A copy of ``inp`` with another configuration."""
    return replace(inp, config=cfg)
