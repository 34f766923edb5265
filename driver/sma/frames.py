"""SMA Sunny Island external-BMS CAN frames: encode and decode from ``sma_si.dbc``.

The frame layouts are data (``sma_si.dbc``, next to this module; users can decode their own
captures with it through cantools; the bridge reads it with the small :mod:`driver.sma.dbc`
reader to stay light). This module adds what a DBC cannot say:

* invalid markers: a raw value whose value-table entry is named ``invalid`` (0xFFFF for unsigned
  16-bit fields, -32768 for signed ones) decodes to ``None``, and ``None`` encodes to it;
* sign conventions are kept as on the wire: 0x356 current is + = charging, 0x305 current is
  + = DISCHARGING (:class:`SiBattery` turns it into Venus's + = charging);
* 0x35A alarm/warning items as names; 0x35E as text; 0x307 flag bits as booleans.

Nothing here touches D-Bus or a CAN bus: :func:`encode` returns ``can.Message`` objects and
:func:`decode_si` takes them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from driver.sma import dbc

DBC_FILE = Path(__file__).resolve().parent / "sma_si.dbc"

# BMS -> Sunny Island
ID_LIMITS = 0x351
ID_SOC = 0x355
ID_MEAS = 0x356
ID_ALARMS = 0x35A
ID_STARTSTOP = 0x35C
ID_NAME = 0x35E
ID_INFO = 0x35F
ID_QUICKSTOP = 0x00F
BMS_IDS = (ID_LIMITS, ID_SOC, ID_MEAS, ID_ALARMS, ID_NAME, ID_INFO)
# Sunny Island -> BMS
SI_IDS = tuple(range(0x300, 0x30B))

START = 0x01
STOP = 0x02

#: 0x35A items in wire order (2 bits each: 01 active, 10 ok)
ALARM_ITEMS = (
    "General", "HighVoltage", "LowVoltage", "HighTemperature", "LowTemperature",
    "ChargeHighTemperature", "ChargeLowTemperature", "DischargeOvercurrent",
    "ChargeOvercurrent", "Contactor", "ShortCircuit", "BmsInternal", "CellImbalance",
)
BITS_ACTIVE = 0b01
BITS_OK = 0b10

# 0x307 bits
RELAY_GNRN = 0x0100
FN_AUTOGN = 0x0001
FN_EXTVFOK = 0x0040
FN_GDON = 0x0080
FN_ERROR = 0x0100
FN_RUN = 0x0200
ST_OVERLOAD = 0x0002
ST_EXTSRCCONN = 0x0100


class FrameError(ValueError):
    """A frame that cannot be decoded (unknown ID, too short, not a data frame)."""


class FrameTooShort(FrameError):
    """A frame with fewer data bytes than its layout's fields need."""


@functools.lru_cache(maxsize=1)
def database() -> dict[int, dbc.Message]:
    """The parsed DBC by frame ID (loaded on first use, never at import)."""
    return dbc.load(DBC_FILE)


def message(frame_id: int) -> dbc.Message:
    """The layout of a frame; KeyError for an unknown ID."""
    return database()[frame_id]


@functools.cache
def _invalid_raw(frame_id: int) -> dict[str, int]:
    msg = message(frame_id)
    out = {}
    for sig in msg.signals:
        for raw, name in (sig.choices or {}).items():
            if str(name) == "invalid":
                out[sig.name] = int(raw)
    return out


def _raw(sig: Any, value: float | None, invalid: int | None) -> int:
    if value is None:
        if invalid is None:
            raise ValueError(f"{sig.name} has no invalid marker; a value is required")
        return invalid
    if not math.isfinite(value):
        raise ValueError(f"{sig.name}: {value} is not finite")
    lo = -(1 << (sig.length - 1)) if sig.is_signed else 0
    hi = (1 << (sig.length - 1)) - 1 if sig.is_signed else (1 << sig.length) - 1
    if invalid is not None and invalid in (lo, hi):
        # never let a real value be sent as the invalid marker
        lo, hi = (lo + 1, hi) if invalid == lo else (lo, hi - 1)
    # saturate before rounding: a huge finite value divided by the scale can overflow
    q = value / sig.scale
    if not q < hi:
        return hi
    if not q > lo:
        return lo
    return max(lo, min(hi, round(q)))


def encode_signals(frame_id: int, values: Mapping[str, float | None]) -> can.Message:
    """A frame from physical values (``None`` = invalid). Values saturate at the field limits."""
    msg = message(frame_id)
    invalid = _invalid_raw(frame_id)
    raws = {s.name: _raw(s, values.get(s.name, 0), invalid.get(s.name)) for s in msg.signals}
    data = msg.encode(raws)
    return can.Message(arbitration_id=frame_id, data=data, is_extended_id=False)


def decode_signals(frame: can.Message) -> dict[str, float | int | None]:
    """Physical values of a known frame (``None`` for invalid markers).

    A frame longer than the layout is accepted and its extra bytes ignored: the field sends
    longer frames than the fields need (the Sunny Island's 0x307 carries a sync byte after
    the flags, 7-8 bytes; PROTOCOLS.md §2). Raises :class:`FrameTooShort` for a frame too
    short for its fields and :class:`FrameError` for unknown IDs and extended/remote/error
    frames.
    """
    if frame.is_extended_id or frame.is_remote_frame or frame.is_error_frame:
        raise FrameError(f"not a data frame with an 11-bit ID: {frame}")
    try:
        msg = message(frame.arbitration_id)
    except KeyError:
        raise FrameError(f"unknown frame ID 0x{frame.arbitration_id:03X}") from None
    data = bytes(frame.data)
    if len(data) < msg.length:
        raise FrameTooShort(
            f"0x{frame.arbitration_id:03X}: {len(data)} data bytes, needs {msg.length}")
    raws = msg.decode(data[:msg.length])
    invalid = _invalid_raw(frame.arbitration_id)
    out: dict[str, float | int | None] = {}
    for sig in msg.signals:
        raw = int(raws[sig.name])
        if invalid.get(sig.name) == raw:
            out[sig.name] = None
        elif sig.scale == 1:
            out[sig.name] = raw
        else:
            out[sig.name] = round(raw * sig.scale, 6)
    return out


# -- BMS frames ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BmsValues:
    """Everything the BMS frame set carries, in physical units (Venus sign conventions)."""

    cvl: float                 # V
    ccl: float                 # A
    dcl: float                 # A
    dvl: float                 # V
    soc: int                   # %
    soh: int | None            # %
    soc_hr: float | None       # %
    voltage: float | None      # V
    current: float | None      # A, + = charging
    temperature: float | None  # °C
    alarms: frozenset[str] = field(default_factory=frozenset)
    warnings: frozenset[str] = field(default_factory=frozenset)
    manufacturer: str = "CanBrdg"
    battery_type: int = 0
    bms_version: int = 0
    capacity_ah: float = 0.0


def alarm_signals(alarms: Iterable[str], warnings: Iterable[str]) -> dict[str, float | None]:
    """0x35A signal values: 01 for active items, 10 for the others."""
    a, w = set(alarms), set(warnings)
    unknown = (a | w) - set(ALARM_ITEMS)
    if unknown:
        raise ValueError(f"unknown 0x35A items: {sorted(unknown)}")
    out: dict[str, float | None] = {}
    for item in ALARM_ITEMS:
        out[f"Alarm{item}"] = BITS_ACTIVE if item in a else BITS_OK
        out[f"Warning{item}"] = BITS_ACTIVE if item in w else BITS_OK
    return out


def encode_bms(v: BmsValues) -> tuple[can.Message, ...]:
    """The six BMS frames (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F) for ``v``."""
    name = v.manufacturer.encode("ascii", "replace")[:8].ljust(8, b" ")
    soc = max(0, min(100, int(v.soc)))
    return (
        encode_signals(ID_LIMITS, {
            "ChargeVoltageLimit": v.cvl, "ChargeCurrentLimit": v.ccl,
            "DischargeCurrentLimit": v.dcl, "DischargeVoltageLimit": v.dvl}),
        encode_signals(ID_SOC, {"Soc": soc, "Soh": v.soh, "SocHighRes": v.soc_hr}),
        encode_signals(ID_MEAS, {
            # 0x356 has no invalid marker: unknown values are sent as 0 with the warning
            # bits set by the caller; the Sunny Island uses its own measurements.
            "BatteryVoltage": v.voltage or 0.0, "BatteryCurrent": v.current or 0.0,
            "BatteryTemperature": v.temperature if v.temperature is not None else 0.0}),
        encode_signals(ID_ALARMS, alarm_signals(v.alarms, v.warnings)),
        encode_signals(ID_NAME, {f"ManufacturerChar{i}": name[i] for i in range(8)}),
        encode_signals(ID_INFO, {
            "BatteryType": v.battery_type, "BmsVersion": v.bms_version,
            "CapacityAh": round(v.capacity_ah), "Reserved": 0}),
    )


def encode_startstop(start: bool) -> can.Message:
    """0x35C as 4 bytes ``[cmd, 0, 0, 0]``: 0x01 start, 0x02 stop (as sent by the one
    implementation proven in the field, SMAVenusDriver; PROTOCOLS.md §2)."""
    return encode_signals(ID_STARTSTOP, {"StartStopCommand": START if start else STOP})


def encode_quickstop() -> can.Message:
    """0x00F, all zero: remote quick stop (standby; needs a start afterwards)."""
    return encode_signals(ID_QUICKSTOP, {"QuickStopZero": 0})


def decode_bms(frames: Iterable[can.Message]) -> dict[str, Any]:
    """Decode BMS frames back into a flat dict (tests, the simulator and the CAN monitor)."""
    out: dict[str, Any] = {}
    for f in frames:
        sig = decode_signals(f)
        if f.arbitration_id == ID_ALARMS:
            out["alarms"] = {i for i in ALARM_ITEMS if sig[f"Alarm{i}"] == BITS_ACTIVE}
            out["warnings"] = {i for i in ALARM_ITEMS if sig[f"Warning{i}"] == BITS_ACTIVE}
        elif f.arbitration_id == ID_NAME:
            out["manufacturer"] = bytes(int(sig[f"ManufacturerChar{i}"] or 0)
                                        for i in range(8)).decode("ascii", "replace").rstrip()
        else:
            out.update(sig)
    return out


# -- Sunny Island frames ----------------------------------------------------------------------

@dataclass(frozen=True)
class SiFlags:
    """0x307 decoded."""

    run: bool
    gd_on: bool
    ext_vf_ok: bool
    gn_rn: bool
    error: bool
    auto_gn: bool
    overload: bool
    ext_src_conn: bool

    @staticmethod
    def from_signals(s: Mapping[str, Any]) -> SiFlags:
        relay, fn, st = int(s["RelayWord"]), int(s["FunctionWord"]), int(s["StatusWord"])
        return SiFlags(
            run=bool(fn & FN_RUN), gd_on=bool(fn & FN_GDON), ext_vf_ok=bool(fn & FN_EXTVFOK),
            gn_rn=bool(relay & RELAY_GNRN), error=bool(fn & FN_ERROR),
            auto_gn=bool(fn & FN_AUTOGN), overload=bool(st & ST_OVERLOAD),
            ext_src_conn=bool(st & ST_EXTSRCCONN))


def flags_signals(f: SiFlags) -> dict[str, float | None]:
    """0x307 signal values from flags (the simulator's side)."""
    fn = ((FN_RUN if f.run else 0) | (FN_GDON if f.gd_on else 0)
          | (FN_EXTVFOK if f.ext_vf_ok else 0) | (FN_ERROR if f.error else 0)
          | (FN_AUTOGN if f.auto_gn else 0))
    return {"RelayWord": RELAY_GNRN if f.gn_rn else 0, "FunctionWord": fn,
            "StatusWord": (ST_OVERLOAD if f.overload else 0)
            | (ST_EXTSRCCONN if f.ext_src_conn else 0)}


def decode_si(frame: can.Message) -> tuple[int, dict[str, Any]]:
    """(frame ID, values) of a Sunny Island frame 0x300-0x30A; :class:`FrameError` otherwise.

    The 0x305 current is also given as ``BatteryCurrentCharging`` (+ = charging, Venus's sign).
    """
    if frame.arbitration_id not in SI_IDS:
        raise FrameError(f"0x{frame.arbitration_id:03X} is not a Sunny Island frame")
    values: dict[str, Any] = decode_signals(frame)
    if frame.arbitration_id == 0x305:
        cur = values["SiBatteryCurrent"]
        values["BatteryCurrentCharging"] = None if cur is None else -cur
    elif frame.arbitration_id == 0x307:
        values["flags"] = SiFlags.from_signals(values)
    return frame.arbitration_id, values


def decode(frame: can.Message) -> str | None:
    """One line describing a Sunny Island link frame, for the CAN monitor; None if not ours."""
    fid = frame.arbitration_id
    if frame.is_extended_id or (fid not in SI_IDS and fid not in
                                (*BMS_IDS, ID_STARTSTOP, ID_QUICKSTOP)):
        return None
    try:
        msg = message(fid)
    except KeyError:
        return None
    try:
        if fid == ID_ALARMS:
            d = decode_bms([frame])
            return (f"SMA {msg.name} alarms={sorted(d['alarms']) or '-'} "
                    f"warnings={sorted(d['warnings']) or '-'}")
        if fid == ID_NAME:
            return f"SMA {msg.name} {decode_bms([frame])['manufacturer']!r}"
        values = decode_signals(frame)
    except FrameError as exc:
        return f"SMA {msg.name} undecodable: {exc}"
    parts = []
    for sig in msg.signals:
        v = values[sig.name]
        unit = sig.unit or ""
        if fid == 0x307:
            parts.append(f"{sig.name}=0x{int(v or 0):04X}")
        elif fid == ID_STARTSTOP:
            parts.append({START: "start", STOP: "stop"}.get(int(v or 0), f"0x{int(v or 0):02X}"))
        else:
            parts.append(f"{sig.name}={'invalid' if v is None else f'{v:g}'}{unit}")
    if fid == 0x307:
        f = SiFlags.from_signals(values)
        on = [n for n in ("run", "gd_on", "ext_vf_ok", "gn_rn", "error", "overload") if
              getattr(f, n)]
        parts.append("[" + ",".join(on) + "]")
    return f"SMA {msg.name} " + " ".join(parts)
