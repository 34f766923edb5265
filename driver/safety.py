"""The one safety policy both drivers use (pure: no D-Bus, no CAN, no threads, no clock).

Contract (stable API; ``dbus-sma`` and ``dbus-superb`` both import exactly these names):

**Values at the edge.** Everything that crosses into a driver (a D-Bus value, a CAN or SDO
decode, a setting) is parsed once, where it arrives, by one of the ``parse_*`` functions. They
never raise; they return the value or ``None`` (*invalid*):

* :func:`parse_number` -- a finite ``int``/``float`` inside an inclusive physical range, as
  ``float``. ``None``, ``bool`` (also ``dbus.Boolean``), strings, bytes, arrays (Venus's empty
  array is *invalid*), NaN, +-inf and values outside the range are invalid.
* :func:`parse_flag` -- a 0/1 flag (``int`` 0 or 1, or a ``bool``) as ``bool``; anything else
  (2, 0.5, NaN, "1", []) is invalid.
* :func:`parse_level` -- a Venus alarm level 0/1/2 as ``int``; anything else invalid.
* :func:`parse_text` -- a ``str`` (printable, trimmed) or invalid.

Named physical ranges (:data:`TEMPERATURE`, :data:`PERCENT`, ...) are the ones both drivers use.

**Validity and age.** A :class:`Reading` is a parsed value plus the monotonic time ``at`` of
the *source's own* update (when the battery last produced it: a changed D-Bus value, a received
TPDO, an SDO answer), never the time we looked at it. ``Reading(None, at)`` is an invalid
reading. :meth:`Reading.usable` gives the value only when it is valid and no older than a limit.

**Charging.** :func:`charge_verdict` is the single rule: charging is allowed (factor > 0) only if

* every *required* safety-relevant reading (the battery's own charge limit, allow-to-charge,
  alarm/error bits, ...) is valid and fresh, and none of the *blocks* is set;
* temperatures are known: every temperature reading passed is valid and fresh (an unknown or
  stale temperature means no charging), the **lowest** is above ``min_charge`` (0 °C for
  LiFePO4: at or below it, no charging), and the **highest** is at most ``max_charge``;
* between ``min_charge`` and ``derate_to`` the factor rises linearly from 0 to 1.

The caller multiplies its charge current limit (CCL) by ``factor`` (0 means CCL 0) and shows
``reasons``. :func:`charge_limit` does that and also treats an invalid cap as 0.

**Discharging** is not cut by an invalid value: it follows the communication ladder
(:func:`ladder_level`, :func:`discharge_limit`), so a glitch does not drop the loads; only
over-temperature (:func:`discharge_allowed`, by the **highest** temperature) or the battery's
own block stops it.

Pure functions with typed inputs; tests in ``tests/test_safety.py`` (examples and hypothesis
properties). Keep this module free of driver imports so it can be shared verbatim.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: inclusive physical ranges, (low, high)
Range = tuple[float, float]
TEMPERATURE: Range = (-55.0, 125.0)      # °C: what battery sensors can report
PERCENT: Range = (0.0, 100.0)            # SoC, SoH
VOLTAGE: Range = (0.0, 1000.0)           # V
CURRENT: Range = (-10000.0, 10000.0)     # A, signed
LIMIT_CURRENT: Range = (0.0, 10000.0)    # A, a charge/discharge current limit
CAPACITY: Range = (0.0, 100000.0)        # Ah
ANY: Range = (-math.inf, math.inf)


def _is_boolean(raw: Any) -> bool:
    # dbus.Boolean is an int subclass, not a bool subclass: recognise it by name so it never
    # passes as a number.
    return isinstance(raw, bool) or type(raw).__name__ == "Boolean"


def parse_number(raw: Any, rng: Range = ANY) -> float | None:
    """A finite number inside ``rng`` (inclusive) as ``float``; ``None`` for anything else."""
    if _is_boolean(raw) or not isinstance(raw, (int, float)):
        return None
    try:
        v = float(raw)
    except (OverflowError, ValueError):  # an int too large for a float
        return None
    if not math.isfinite(v) or not rng[0] <= v <= rng[1]:
        return None
    return v


def parse_flag(raw: Any) -> bool | None:
    """A 0/1 flag (or a bool) as ``bool``; ``None`` for anything else."""
    if _is_boolean(raw):
        return bool(raw)
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, float) and raw in (0.0, 1.0):
        return bool(raw)
    return None


def parse_level(raw: Any) -> int | None:
    """A Venus alarm level (0 ok, 1 warning, 2 alarm) as ``int``; ``None`` otherwise."""
    if _is_boolean(raw):
        return None
    if isinstance(raw, int) and 0 <= raw <= 2:
        return int(raw)
    if isinstance(raw, float) and raw in (0.0, 1.0, 2.0):
        return int(raw)
    return None


def parse_text(raw: Any, maxlen: int = 256) -> str | None:
    """A text value, trimmed and without control characters; ``None`` if not a string."""
    if not isinstance(raw, str):
        return None
    return "".join(c for c in raw if c.isprintable()).strip()[:maxlen]


@dataclass(frozen=True)
class Reading(Generic[T]):
    """A parsed value (``None`` = invalid) and the monotonic time of the source's update."""

    value: T | None
    at: float
    #: the source's own age limit (s); when set it replaces the ``max_age`` a caller passes
    #: (a value read every 5 s must not be judged by a limit made for one read every second)
    max_age: float | None = None

    @property
    def valid(self) -> bool:
        """True when the value is valid (whatever its age)."""
        return self.value is not None

    def age(self, now: float) -> float:
        """Seconds since the source produced the value (never negative)."""
        return max(0.0, now - self.at)

    def usable(self, now: float, max_age: float) -> T | None:
        """The value if valid and no older than its own age limit (if it has one) or else
        ``max_age`` seconds; ``None`` otherwise."""
        limit = max_age if self.max_age is None else self.max_age
        if self.value is None or not now - self.at <= limit:
            return None
        return self.value


def invalid(at: float = -math.inf) -> Reading[Any]:
    """An invalid reading (no value)."""
    return Reading(None, at)


@dataclass(frozen=True)
class TemperaturePolicy:
    """Temperature thresholds (°C) from the driver's settings; LiFePO4 defaults."""

    min_charge: float = 0.0      # no charging at or below
    derate_to: float = 5.0       # full charge current from here up
    max_charge: float = 45.0     # no charging above
    max_discharge: float = 55.0  # no discharging above


def temperature_extremes(temps: Iterable[Reading[float]], now: float,
                         max_age: float) -> tuple[float, float] | None:
    """(lowest, highest) of the temperature readings, or ``None`` when there is none or any
    of them is invalid or older than ``max_age`` or its own limit (an unknown temperature is not a
    warm one)."""
    vals: list[float] = []
    for r in temps:
        v = r.usable(now, max_age)
        if v is None:
            return None
        vals.append(v)
    if not vals:
        return None
    return min(vals), max(vals)


def temperature_factor(lowest: float | None, highest: float | None,
                       p: TemperaturePolicy) -> tuple[float, str]:
    """The charge-current factor 0..1 from the lowest and highest temperature, and why.

    Unknown (``None``) means 0 -- no charging. At or below ``min_charge`` (lowest) or above
    ``max_charge`` (highest): 0. Between ``min_charge`` and ``derate_to``: linear.
    """
    if lowest is None or highest is None or not (math.isfinite(lowest)
                                                 and math.isfinite(highest)):
        return 0.0, "temperature unknown"
    if lowest <= p.min_charge:
        return 0.0, f"temperature {lowest:g} °C at or below {p.min_charge:g} °C"
    if highest > p.max_charge:
        return 0.0, f"temperature {highest:g} °C above {p.max_charge:g} °C"
    if lowest < p.derate_to and p.derate_to > p.min_charge:
        f = (lowest - p.min_charge) / (p.derate_to - p.min_charge)
        return max(0.0, min(1.0, f)), f"temperature {lowest:g} °C (derated)"
    return 1.0, ""


def discharge_allowed(highest: float | None, p: TemperaturePolicy) -> bool:
    """False only when a known highest temperature is above ``max_discharge``.

    An unknown temperature does not cut discharging: that is the ladder's decision.
    """
    return highest is None or not highest > p.max_discharge


@dataclass(frozen=True)
class ChargeVerdict:
    """Whether (and how much) charging is allowed, and why not."""

    factor: float                 # 0..1 multiplier for the charge current limit
    reasons: tuple[str, ...]      # empty when nothing restricts
    lowest: float | None          # temperatures used (None when unknown)
    highest: float | None

    @property
    def blocked(self) -> bool:
        return self.factor <= 0.0


def charge_verdict(*, now: float, max_age: float, policy: TemperaturePolicy,
                   temperatures: Iterable[Reading[float]],
                   required: Mapping[str, Reading[Any]] | None = None,
                   blocks: Mapping[str, bool] | None = None) -> ChargeVerdict:
    """The one charging rule (see the module docstring).

    ``required``: name -> reading that must be valid and fresh (else no charging);
    ``blocks``: name -> True when that condition forbids charging (an alarm, allow-to-charge
    off). ``max_age`` applies to the temperatures and the required readings alike, except to a
    reading with its own age limit (:attr:`Reading.max_age`).
    """
    reasons: list[str] = []
    ext = temperature_extremes(temperatures, now, max_age)
    lo, hi = ext if ext is not None else (None, None)
    factor, why = temperature_factor(lo, hi, policy)
    if why:
        reasons.append(why)
    for name, r in (required or {}).items():
        if r.value is None:
            reasons.append(f"{name} unknown")
            factor = 0.0
        elif r.usable(now, max_age) is None:
            reasons.append(f"{name} {r.age(now):.0f} s old")
            factor = 0.0
    for name, on in (blocks or {}).items():
        if on:
            reasons.append(name)
            factor = 0.0
    return ChargeVerdict(factor=factor, reasons=tuple(reasons), lowest=lo, highest=hi)


def min_valid(*vals: float | None) -> float | None:
    """The smallest of the valid (finite) values, ``None`` when there is none."""
    good = [v for v in vals if v is not None and math.isfinite(v)]
    return min(good) if good else None


def charge_limit(cap: float | None, verdict: ChargeVerdict) -> float:
    """CCL from a cap (the minimum of the limits that apply) and the verdict.

    An invalid or negative cap is 0; the result is never above ``cap`` and never negative.
    """
    if cap is None or not math.isfinite(cap) or cap <= 0.0:
        return 0.0
    return max(0.0, min(cap, cap * verdict.factor))


class Level(enum.IntEnum):
    """The communication ladder, by the age of the last good data."""

    STARTUP = 0   # no data yet
    NORMAL = 1
    STALE = 2     # small charge current, reduced discharge current
    ALARM = 3     # no charging, reduced discharge current
    STOPPED = 4   # no charging, no discharging


def ladder_level(age: float | None, warn: float, alarm: float, stop: float,
                 had_data: bool = True) -> Level:
    """The ladder level for data ``age`` seconds old (``None`` or NaN = infinitely old).

    Without data yet (``had_data`` False) the level is STARTUP until ``alarm``.
    """
    a = math.inf if age is None or not math.isfinite(age) else max(0.0, age)
    if a >= stop:
        return Level.STOPPED
    if a >= alarm:
        return Level.ALARM
    if not had_data:
        return Level.STARTUP
    if a >= warn:
        return Level.STALE
    return Level.NORMAL


def discharge_limit(level: Level, normal: float | None, reduced: float) -> float:
    """DCL on the ladder: the normal limit, reduced while stale/alarm/startup, 0 when stopped.

    An invalid ``normal`` limit falls back to ``reduced`` (discharge follows the ladder,
    not the glitch).
    """
    red = reduced if math.isfinite(reduced) and reduced > 0 else 0.0
    if level == Level.STOPPED:
        return 0.0
    ok = normal is not None and math.isfinite(normal) and normal >= 0
    if level == Level.NORMAL and ok:
        return float(normal)  # type: ignore[arg-type]
    return min(float(normal), red) if ok else red  # type: ignore[arg-type]
