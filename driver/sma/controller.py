"""The Sunny Island's external BMS brain: charge controller and safety ladder (pure).

No D-Bus, no CAN, no threads: :class:`Controller` takes an immutable :class:`Inputs` snapshot
and a clock, and returns the BMS values to send (:class:`~driver.sma.frames.BmsValues`) plus at
most one start/stop command. Tests drive it with a fake clock.

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
                                 repeated; a start when good data return
======== ======================= ============================================================

Implausible battery data (SoC outside 0-100, voltage outside the Sunny Island's 41-63 V, a
current whose sign disagrees with the Sunny Island's own measurement) are never used: the last
good data stay, ageing, and the level is at least ALARM while they last.

Charge controller (NORMAL only): BULK -> ABSORPTION when the voltage enters the taper band
below the absorption voltage; ABSORPTION -> FLOAT when the charge current stays below the tail
current for ConditionTime, or after AbsorptionTime; FLOAT -> BULK when the voltage stays below
the re-bulk voltage for ConditionTime or the SoC falls to RebulkSoc. In the taper band the
charge current limit falls linearly to 0 at the target voltage; rises are slew-limited, falls
apply at once, and a limit below MinCurrentStep is sent as 0.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from driver.sma.frames import BmsValues

SI_MIN_V = 41.0
SI_MAX_V = 63.0
SI_MIN_DVL = 41.0
SI_MAX_DVL = 48.0
#: a Sunny Island 0x305 frame older than this is not used for the sign check
SI_FRESH_S = 5.0
#: how often a stop command is repeated while STOPPED (a lost frame must not leave it running)
STOP_REPEAT_S = 5.0
#: how many ticks a start command is sent when data return (then the Sunny Island's Run flag
#: tells whether it came back; see vebus /State)
START_REPEATS = 3


class Level(enum.IntEnum):
    STARTUP = 0
    NORMAL = 1
    STALE = 2
    ALARM = 3
    STOPPED = 4


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
    stale_discharge_current: float = field(default=50.0,
                                           metadata={"key": "StaleDischargeCurrent"})
    startup_soc: float = field(default=50, metadata={"key": "StartupSoc"})
    use_stop_start: bool = field(default=True, metadata={"key": "UseStopStart"})
    plausible_current_band: float = field(default=5.0,
                                          metadata={"key": "PlausibleCurrentBand"})
    capacity: float = field(default=0.0, metadata={"key": "BatteryCapacity"})

    @classmethod
    def from_settings(cls, get: Callable[[str], Any]) -> Config:
        """Build from a settings getter taking keys such as ``Sma/FloatVoltage``."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f"Sma/{f.metadata['key']}")
            kw[f.name] = bool(raw) if f.type in ("bool", bool) else float(raw)
        cfg = cls(**kw)
        cfg.check()
        return cfg

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
    """One reading of the battery source; ``at`` = monotonic time it was confirmed current."""

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
    allow_to_charge: bool = True
    allow_to_discharge: bool = True
    alarms: Mapping[str, int] = field(default_factory=dict)
    product: str = ""


@dataclass(frozen=True)
class SiMeasurement:
    """The Sunny Island's own battery measurement (0x305); current + = charging."""

    at: float
    voltage: float | None
    current: float | None


@dataclass(frozen=True)
class Dvcc:
    """Limits Venus (DVCC) wrote into the vebus service; None = not written."""

    max_charge_voltage: float | None = None
    max_charge_current: float | None = None
    max_discharge_current: float | None = None
    battery_low_voltage: float | None = None
    dc_max_charge_current: float | None = None


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


def _min(*vals: float | None) -> float:
    return min(v for v in vals if v is not None)


def implausible_reason(b: Battery, si: SiMeasurement | None, cfg: Config, now: float) -> str:
    """Why a complete battery reading cannot be used ('' if it can)."""
    assert b.soc is not None and b.voltage is not None and b.current is not None
    if not all(math.isfinite(x) for x in (b.soc, b.voltage, b.current)):
        return "non-finite values"
    if not 0.0 <= b.soc <= 100.0:
        return f"state of charge {b.soc:g} % outside 0-100"
    if not SI_MIN_V <= b.voltage <= SI_MAX_V:
        return f"voltage {b.voltage:g} V outside {SI_MIN_V:g}-{SI_MAX_V:g} V"
    if (si is not None and si.current is not None and now - si.at <= SI_FRESH_S
            and abs(b.current) >= cfg.plausible_current_band
            and abs(si.current) >= cfg.plausible_current_band
            and (b.current > 0) != (si.current > 0)):
        return (f"battery current {b.current:+g} A disagrees in sign with the Sunny Island's "
                f"{si.current:+g} A")
    return ""


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
        self._cond_since: float | None = None
        self._stop_sent_at: float | None = None
        self._stopped = False         # we commanded a stop that is not yet undone
        self._start_left = 0
        self._user_off_sent = False

    # -- helpers ---------------------------------------------------------------------------
    def _set_phase(self, p: Phase, now: float) -> None:
        if p != self.phase:
            self.phase = p
            self._phase_since = now
            self._cond_since = None

    def _held(self, cond: bool, now: float, need: float) -> bool:
        """True once ``cond`` has held continuously for ``need`` seconds."""
        if not cond:
            self._cond_since = None
            return False
        if self._cond_since is None:
            self._cond_since = now
        return now - self._cond_since >= need

    def _charge_phase(self, b: Battery, cfg: Config, now: float) -> None:
        v, i, soc = b.voltage or 0.0, b.current or 0.0, b.soc or 0.0
        if self.phase == Phase.BULK and v >= cfg.absorption_voltage - cfg.taper_band:
            self._set_phase(Phase.ABSORPTION, now)
        if self.phase == Phase.ABSORPTION:
            timed_out = now - self._phase_since >= cfg.absorption_time * 60.0
            tail = self._held(i < cfg.tail_current, now, cfg.condition_time)
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
        """LiFePO4 charge derating: 0 at or below the minimum, linear to 1, 0 above the max."""
        if t is None:
            return 1.0
        if t <= cfg.min_charge_temperature or t > cfg.max_charge_temperature:
            return 0.0
        if t < cfg.charge_derate_temperature:
            return (t - cfg.min_charge_temperature) / (
                cfg.charge_derate_temperature - cfg.min_charge_temperature)
        return 1.0

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

    # -- the step --------------------------------------------------------------------------
    def step(self, inp: Inputs) -> Output:
        cfg = inp.config
        now = self.clock()
        dt = 0.0 if self._last_step is None else max(0.0, min(5.0, now - self._last_step))
        self._last_step = now
        b = inp.battery
        why = ""
        if b is not None and None not in (b.soc, b.voltage, b.current):
            # (a reading without voltage, current or SoC is no data: it just ages)
            why = implausible_reason(b, inp.si, cfg, now)
            if not why and (self.good_at is None or b.at >= self.good_at):
                self.good, self.good_at = b, b.at
        age = now - (self.good_at if self.good_at is not None else self.started)

        if self.good is None:
            level = Level.STARTUP
        else:
            level = Level.NORMAL
            if age >= cfg.stale_warning_time:
                level = Level.STALE
        if age >= cfg.stale_alarm_time or (why and self.good is not None):
            level = max(level, Level.ALARM)
        if age >= cfg.stop_time:
            level = Level.STOPPED
        if why and self.good is None and age >= cfg.stale_alarm_time:
            level = max(level, Level.ALARM)
        self.level = level

        alarms: set[str] = set()
        warnings: set[str] = set()
        reasons: list[str] = []
        g = self.good
        dvcc = inp.dvcc
        cvl_cap = _min(cfg.absorption_voltage, dvcc.max_charge_voltage,
                       g.max_charge_voltage if g else None)
        dvl = max(cfg.discharge_voltage, dvcc.battery_low_voltage or 0.0,
                  (g.battery_low_voltage or 0.0) if g else 0.0)
        dvl = max(SI_MIN_DVL, min(SI_MAX_DVL, dvl))
        ccl_cap = _min(cfg.max_charge_current, dvcc.max_charge_current,
                       dvcc.dc_max_charge_current, g.max_charge_current if g else None)
        dcl = _min(cfg.max_discharge_current, dvcc.max_discharge_current,
                   g.max_discharge_current if g else None)

        if level in (Level.NORMAL, Level.STALE) and g is not None:
            if level == Level.NORMAL:
                self._charge_phase(g, cfg, now)
            target = cfg.absorption_voltage if self.phase != Phase.FLOAT else cfg.float_voltage
            cvl = min(cvl_cap, target)
            ccl = ccl_cap
            t = g.temperature
            f = self.temperature_factor(t, cfg)
            if f < 1.0:
                reasons.append(f"temperature {t:g} °C")
                ccl *= f
                if t is not None and t <= cfg.charge_derate_temperature:
                    warnings.add("ChargeLowTemperature")
                if t is not None and t > cfg.max_charge_temperature:
                    warnings.add("ChargeHighTemperature")
            if t is not None and t > cfg.max_discharge_temperature:
                dcl = 0.0
                alarms.add("HighTemperature")
            # taper toward the target voltage
            v = g.voltage or 0.0
            if v >= cvl - cfg.taper_band:
                frac = max(0.0, (cvl - v) / cfg.taper_band)
                if frac < 1.0:
                    reasons.append("taper")
                ccl *= frac
            for name, lvl in g.alarms.items():
                item = ALARM_MAP.get(name)
                if item is None or not lvl:
                    continue
                (alarms if lvl >= 2 else warnings).add(item)
                if lvl >= 2 and name in CHARGE_BLOCKING:
                    ccl = 0.0
                    reasons.append(f"battery alarm {name}")
                if lvl >= 2 and name in DISCHARGE_BLOCKING:
                    dcl = 0.0
            if not g.allow_to_charge:
                ccl = 0.0
                reasons.append("battery disallows charging")
            if not g.allow_to_discharge:
                dcl = 0.0
            if level == Level.STALE:
                cvl = min(cvl, cfg.float_voltage)
                ccl = min(ccl, cfg.stale_charge_current)
                dcl = min(dcl, cfg.stale_discharge_current)
                warnings.add("General")
                reasons.append("battery data stale")
                soc = self._soc_sent if self._soc_sent is not None else float(cfg.startup_soc)
            else:
                soc = self._soc(float(g.soc or 0.0), dt, cfg, not self.absorption_done)
        else:
            cvl = min(cvl_cap, cfg.float_voltage)
            soc = self._soc_sent if self._soc_sent is not None else float(cfg.startup_soc)
            if level == Level.STARTUP:
                ccl = min(ccl_cap, cfg.stale_charge_current)
                dcl = min(dcl, cfg.stale_discharge_current)
                warnings.add("General")
                reasons.append("waiting for battery data")
            elif level == Level.ALARM:
                ccl = 0.0
                dcl = min(dcl, cfg.stale_discharge_current)
                alarms.add("General")
                reasons.append("battery data " + (why or "stale too long"))
            else:
                ccl = 0.0
                dcl = 0.0
                alarms.add("General")
                reasons.append("stopped: battery data stale")
        if why:
            warnings.add("General")
        # A newer reading that cannot be used as data (a value missing, or implausible) still
        # restricts charging at once (PROTOCOLS.md §4: restrictions apply at once): the battery
        # service's charge limit, its allow-to-charge flag, charge-blocking alarms. The
        # aggregate of batteries that all went offline publishes CCL 0 without a voltage;
        # without this the last good CCL was sent until the ladder's stale step. Discharge is
        # left to the ladder, so a communication loss does not drop the loads at once.
        r = inp.battery
        if r is not None and r is not g:
            limit = self._charge_restriction(r)
            if limit < ccl:
                ccl = limit
                reasons.append("latest battery reading restricts charging")

        # slew-limit rises, apply falls at once, small values become 0
        ccl = max(0.0, ccl)
        if ccl > self._ccl_sent:
            ccl = min(ccl, self._ccl_sent + cfg.slew_rate * dt)
        if ccl < cfg.min_current_step:
            ccl = 0.0
        self._ccl_sent = ccl
        cvl = max(SI_MIN_V, min(SI_MAX_V, cvl))

        command = self._command(level, inp.mode_on, cfg, now)

        src = g
        si = inp.si
        voltage = src.voltage if src is not None else (si.voltage if si is not None else None)
        capacity = cfg.capacity or ((g.capacity or 0.0) if g is not None else 0.0)
        soc_int = max(0, min(100, round(soc)))
        values = BmsValues(
            cvl=round(cvl, 1), ccl=round(ccl, 1), dcl=round(max(0.0, dcl), 1), dvl=round(dvl, 1),
            soc=soc_int, soh=round(g.soh) if g is not None and g.soh is not None else None,
            soc_hr=round(min(soc, 100.0), 2),
            voltage=voltage, current=src.current if src is not None else None,
            temperature=src.temperature if src is not None else None,
            alarms=frozenset(alarms), warnings=frozenset(warnings),
            manufacturer="CanBrdg", battery_type=0, bms_version=1, capacity_ah=capacity,
        )
        return Output(values=values, level=level, phase=self.phase, command=command,
                      data_age=age, implausible=why, absorption_done=self.absorption_done,
                      reasons=tuple(reasons))

    @staticmethod
    def _charge_restriction(r: Battery) -> float:
        """The charge current a reading allows at most (inf when it says nothing)."""
        if not r.allow_to_charge or any(lvl >= 2 and name in CHARGE_BLOCKING
                                        for name, lvl in r.alarms.items()):
            return 0.0
        return r.max_charge_current if r.max_charge_current is not None else math.inf

    def _command(self, level: Level, mode_on: bool, cfg: Config, now: float) -> bool | None:
        """Start/stop decisions: the ladder's stop (if enabled) and the user's /Mode."""
        want_stop = not mode_on or (cfg.use_stop_start and level == Level.STOPPED)
        if want_stop:
            self._start_left = 0
            if self._stop_sent_at is None or now - self._stop_sent_at >= STOP_REPEAT_S:
                self._stop_sent_at = now
                self._stopped = True
                return False
            return None
        self._stop_sent_at = None
        if self._stopped and level == Level.NORMAL:
            self._stopped = False
            self._start_left = START_REPEATS
        if self._start_left > 0:
            self._start_left -= 1
            return True
        return None

    def mode_started(self) -> None:
        """The user set /Mode on: send start commands (even if we did not stop it)."""
        self._start_left = START_REPEATS


def with_config(inp: Inputs, cfg: Config) -> Inputs:
    """A copy of ``inp`` with another configuration."""
    return replace(inp, config=cfg)
