"""Byte layouts of the Sunny Island link, written by hand from PROTOCOLS.md §2 (docs/sma.md).

The simulated Sunny Island and the tests use these tables, never ``driver/sma/sma_si.dbc``, so
a mistake in the driver's layout shows up as a disagreement instead of being shared. All
fields little-endian. Frames the Sunny Island sends are built here the way the field sends
them (0x307 with its sync byte: 8 bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import can

U16_INVALID = 0xFFFF
S16_INVALID = -0x8000

#: 0x35A items, 2 bits each from bit 0 of byte 0 (alarms) and byte 4 (warnings)
ALARM_ITEMS = ("General", "HighVoltage", "LowVoltage", "HighTemperature", "LowTemperature",
               "ChargeHighTemperature", "ChargeLowTemperature", "DischargeOvercurrent",
               "ChargeOvercurrent", "Contactor", "ShortCircuit", "BmsInternal",
               "CellImbalance")

# 0x307 bits
RELAY_GNRN = 0x0100
FN_AUTOGN = 0x0001
FN_EXTVFOK = 0x0040
FN_GDON = 0x0080
FN_ERROR = 0x0100
FN_RUN = 0x0200
ST_OVERLOAD = 0x0002
ST_EXTSRCCONN = 0x0100


def msg(fid: int, data: bytes) -> can.Message:
    return can.Message(arbitration_id=fid, data=data, is_extended_id=False)


def _u16(v: float | None, scale: float) -> int:
    if v is None:
        return U16_INVALID
    return max(0, min(0xFFFE, round(v / scale)))


def _s16(v: float | None, scale: float) -> int:
    if v is None:
        return S16_INVALID
    return max(-0x7FFF, min(0x7FFF, round(v / scale)))


# -- BMS -> Sunny Island (what the bridge sends) ----------------------------------------------

@dataclass(frozen=True)
class Limits351:
    cvl: float
    ccl: float
    dcl: float
    dvl: float


def decode_351(data: bytes) -> Limits351:
    """CVL u16 0.1 V, CCL s16 0.1 A, DCL s16 0.1 A, DVL u16 0.1 V."""
    cvl, ccl, dcl, dvl = struct.unpack_from("<HhhH", data)
    return Limits351(cvl / 10, ccl / 10, dcl / 10, dvl / 10)


def decode_355(data: bytes) -> tuple[int, int | None, float | None]:
    """SoC %, SoH % (0xFFFF invalid), high-resolution SoC 0.01 % (0xFFFF invalid)."""
    soc, soh, hr = struct.unpack_from("<HHH", data)
    return soc, None if soh == U16_INVALID else soh, None if hr == U16_INVALID else hr / 100


def decode_356(data: bytes) -> tuple[float, float, float]:
    """Voltage s16 0.01 V, current s16 0.1 A (+ = charging), temperature s16 0.1 °C."""
    v, i, t = struct.unpack_from("<hhh", data)
    return v / 100, i / 10, t / 10


def decode_35a(data: bytes) -> tuple[set[str], set[str]]:
    """(active alarms, active warnings): 01 = active, 10 = OK."""
    def items(base: int) -> set[str]:
        out = set()
        for k, name in enumerate(ALARM_ITEMS):
            byte, shift = base + k // 4, 2 * (k % 4)
            if (data[byte] >> shift) & 0b11 == 0b01:
                out.add(name)
        return out
    return items(0), items(4)


def startstop(data: bytes) -> int | None:
    """0x35C command byte (1 start, 2 stop); None for an empty frame."""
    return data[0] if data else None


# -- Sunny Island -> BMS (what the simulator sends) --------------------------------------------

def three(fid: int, values: tuple[float | None, float | None, float | None],
          scale: float) -> can.Message:
    """0x300-0x303: three s16 values (L1 L2 L3)."""
    return msg(fid, struct.pack("<hhh", *(_s16(v, scale) for v in values)))


def ac_voltage(fid: int, volts: tuple[float, float, float], hz: float) -> can.Message:
    """0x304/0x309: L1-L3 u16 0.1 V, frequency u16 0.01 Hz."""
    return msg(fid, struct.pack("<HHHH", *(_u16(v, 0.1) for v in volts), _u16(hz, 0.01)))


def battery_305(volts: float | None, amps_discharging: float | None, temp: float | None,
                soc: float | None) -> can.Message:
    """0x305: u16 0.1 V, s16 0.1 A (+ = DISCHARGING), s16 0.1 °C, u16 0.1 % SoC."""
    return msg(0x305, struct.pack("<HhhH", _u16(volts, 0.1), _s16(amps_discharging, 0.1),
                                  _s16(temp, 0.1), _u16(soc, 0.1)))


def state_306(soh: int, procedure: int, state: int, error: int,
              cvl: float | None) -> can.Message:
    """0x306: u16 SoH, int8 charging procedure, int8 operating state, int16 active error,
    u16 0.1 V charge-voltage set-point."""
    return msg(0x306, struct.pack("<HbbhH", soh, procedure, state, error,
                                  _u16(cvl, 0.1)))


def flags_307(relay: int, function: int, status: int, sync: int = 0) -> can.Message:
    """0x307 as the field sends it: relay, function, status words, a sync byte, 0 (8 bytes)."""
    return msg(0x307, struct.pack("<HHHBB", relay, function, status, sync & 0xFF, 0))


def load_308(kw: float) -> can.Message:
    """0x308: total load power s16 0.1 kW."""
    return msg(0x308, struct.pack("<h", _s16(kw, 0.1)))


def pv_grid_30a(pv_kw: float, consumption_kw: float, feed_kw: float) -> can.Message:
    """0x30A: PV power, grid consumption, grid feed, s16 0.1 kW each."""
    return msg(0x30A, struct.pack("<hhh", _s16(pv_kw, 0.1), _s16(consumption_kw, 0.1),
                                  _s16(feed_kw, 0.1)))


def decode_305(data: bytes) -> dict[str, float | None]:
    """0x305 back to values (the simulated battery service mirrors it); current + = charging."""
    v, i, t, soc = struct.unpack_from("<HhhH", data)
    return {"voltage": None if v == U16_INVALID else v / 10,
            "current": None if i == S16_INVALID else -i / 10,
            "temperature": None if t == S16_INVALID else t / 10,
            "soc": None if soc == U16_INVALID else soc / 10}
