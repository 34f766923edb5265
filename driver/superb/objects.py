"""The SuperB Epsilon V2 CANopen objects the driver reads, as data.

One row per object (PROTOCOLS.md §1): index, sub-index, wire type, scale, unit, the sizes a
response may have, a plausible range, how often to read it, the minimum firmware that has it,
and how sure we are of it. The generic poller (:mod:`driver.superb.poller`) reads this table;
the simulator (``sim/superb.py``) builds its object dictionary from it; the CAN monitor decodes
frames with it. Nothing here does I/O.

Values are decoded to engineering units (V, A, °C, %, Ah, mV) or ``None`` when a response is
unusable (wrong size, out of the plausible range): ``None`` means invalid, never 0.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import Enum

#: CiA 301 vendor id of SuperB (1018:01)
SUPERB_VENDOR_ID = 0x37C


class Rate(Enum):
    """How often an object is read."""

    FAST = "fast"  #: every poll cycle (PollInterval)
    #: every MediumPollInterval (and at most once per cycle): the temperatures, which decide
    #: charging but change over minutes, not seconds, and the warning bits (alarm level 1
    #: only) (docs/superb.md, "Poll rates")
    MEDIUM = "medium"
    SLOW = "slow"  #: every SlowPollInterval
    ONCE = "once"  #: at start and after the node (re)appears (identity, firmware, capacity)


@dataclass(frozen=True)
class ObjectDef:
    """One CANopen object of the battery."""

    key: str  #: name used in the code (``voltage``, ``serial``, ...)
    index: int
    subindex: int
    kind: str  #: ``u``, ``i`` (little-endian integers) or ``str`` (visible string)
    size: int  #: the size the battery is expected to send (bytes; 0 for strings)
    scale: float = 1.0  #: engineering value = raw * scale
    unit: str = ""
    rate: Rate = Rate.FAST
    #: sizes also accepted (e.g. seed firmware sends 6060 as I32, some nodes pad U8 to U32)
    alt_sizes: tuple[int, ...] = ()
    lo: float | None = None  #: plausible range of the engineering value; outside -> None
    hi: float | None = None
    min_fw: tuple[int, ...] = ()  #: firmware that first has the object (() = all)
    #: first firmware that no longer has the object with this meaning (() = none)
    max_fw: tuple[int, ...] = ()
    certainty: str = "[HW]"
    description: str = ""

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.size, *self.alt_sizes)

    @property
    def label(self) -> str:
        return f"{self.index:04X}:{self.subindex:02X}"

    def applies(self, firmware: tuple[int, ...] | None) -> bool:
        """Whether a node with ``firmware`` has this object with this meaning.

        Unknown firmware: every row applies (identification reads only ONCE rows, which
        carry no firmware bounds)."""
        if firmware is None:
            return True
        if self.min_fw and firmware < self.min_fw:
            return False
        return not (self.max_fw and firmware >= self.max_fw)


def _o(key: str, index: int, sub: int, kind: str, size: int, **kw: object) -> ObjectDef:
    return ObjectDef(key, index, sub, kind, size, **kw)  # type: ignore[arg-type]


F, M, S, ONE = Rate.FAST, Rate.MEDIUM, Rate.SLOW, Rate.ONCE

#: Every object the driver reads. Order matters within a rate: fast objects are read in this
#: order each cycle (the most important first, so a node that dies mid-cycle has fresh voltage).
OBJECTS: tuple[ObjectDef, ...] = (
    # -- fast: every poll cycle --------------------------------------------------------------
    _o("voltage", 0x6060, 0, "u", 4, scale=1 / 1024, unit="V", rate=F, alt_sizes=(2,),
       lo=0.0, hi=80.0, certainty="[HW] [STD]",
       description="battery voltage (U32; seed firmware I32)"),
    _o("current", 0x2010, 0, "i", 4, scale=0.001, unit="A", rate=F, lo=-3000.0, hi=3000.0,
       certainty="[HW]", description="battery current, + = charging"),
    _o("soc", 0x6081, 0, "u", 1, unit="%", rate=F, alt_sizes=(2, 4), lo=0.0, hi=100.0,
       certainty="[HW] [STD]", description="state of charge"),
    _o("errors", 0x2004, 0, "u", 2, rate=F, alt_sizes=(1, 4), certainty="[RE?]",
       description="error bitfield"),
    _o("max_discharge_current", 0x5021, 1, "i", 4, scale=0.001, unit="A", rate=F,
       lo=0.0, hi=5000.0, certainty="[RE?]", description="battery's discharge current limit"),
    _o("max_charge_current", 0x5021, 2, "i", 4, scale=0.001, unit="A", rate=F,
       lo=0.0, hi=5000.0, certainty="[RE?]", description="battery's charge current limit"),
    # -- medium: every MediumPollInterval -------------------------------------------------------
    # The pack and the lowest and highest cell temperature decide charging (driver/safety.py),
    # each with the age limit of its own rate (MediumPollInterval + ValueMaxAge).
    _o("temperature", 0x6010, 0, "i", 2, scale=0.125, unit="°C", rate=M, alt_sizes=(4,),
       lo=-60.0, hi=120.0, certainty="[HW] [STD]", description="battery temperature"),
    _o("cell_temperature_min", 0x2023, 1, "i", 2, scale=0.1, unit="°C", rate=M,
       lo=-60.0, hi=120.0, certainty="[RE?]", description="lowest cell temperature"),
    _o("cell_temperature_max", 0x2023, 2, "i", 2, scale=0.1, unit="°C", rate=M,
       lo=-60.0, hi=120.0, certainty="[RE?]", description="highest cell temperature"),
    # warnings raise alarms at level 1 only; charging is decided by the error bits (fast)
    _o("warnings", 0x2005, 0, "u", 2, rate=M, alt_sizes=(1, 4), certainty="[RE?]",
       description="warning bitfield"),
    # -- slow: history, cells ------------------------------------------------------------------
    _o("ah_expended", 0x6051, 0, "u", 2, scale=0.125, unit="Ah", rate=S, alt_sizes=(4,),
       lo=0.0, hi=100000.0, min_fw=(1, 2), certainty="[RE?] [STD]",
       description="Ah expended since last charge"),
    _o("ah_returned", 0x6052, 0, "u", 2, scale=0.125, unit="Ah", rate=S, alt_sizes=(4,),
       lo=0.0, hi=100000.0, min_fw=(1, 2), certainty="[RE?] [STD]",
       description="Ah returned during last charge"),
    _o("ah_since_equalization", 0x6053, 0, "u", 2, scale=0.125, unit="Ah", rate=S,
       alt_sizes=(4,), certainty="[HW]", description="Ah since last equalization"),
    # 6050: the seed project read charge cycles (U16) from every SuperB firmware it met [HW];
    # CiA 418 defines 6050 as cumulative Ah charged (U32, 1/8 Ah). The meaning comes from this
    # row (by firmware), never from the length of an answer: a firmware found to follow CiA 418
    # gets its own row with min_fw, and this one a max_fw.
    _o("cycles_6050", 0x6050, 0, "u", 2, rate=S, alt_sizes=(4,), lo=0, hi=1000000,
       certainty="[HW] (CiA 418 differs)",
       description="charge cycle counter (seed firmware; U16, some nodes pad to U32)"),
    _o("cycles", 0x2014, 0, "u", 2, rate=S, alt_sizes=(4,), lo=0, hi=1000000,
       certainty="[RE?]", description="charge cycle counter"),
    _o("charge_current_request", 0x6070, 0, "u", 2, scale=1 / 16, unit="A", rate=S,
       certainty="[STD] verify", description="CiA 418 charge current requested (diagnostic)"),
    _o("cell_voltage_min", 0x2022, 1, "i", 2, scale=0.001, unit="V", rate=S, lo=0.5, hi=5.0,
       certainty="[RE?]", description="lowest cell voltage"),
    _o("cell_voltage_max", 0x2022, 2, "i", 2, scale=0.001, unit="V", rate=S, lo=0.5, hi=5.0,
       certainty="[RE?]", description="highest cell voltage"),
    _o("awake", 0x2006, 0, "u", 1, rate=S, alt_sizes=(2, 4), certainty="[RE?]",
       description="0 = asleep (asleep is not offline)"),
    # -- once: identity and fixed parameters -----------------------------------------------------
    _o("vendor", 0x1018, 1, "u", 4, rate=ONE, certainty="[HW]", description="vendor id"),
    _o("product", 0x1018, 2, "u", 4, rate=ONE, certainty="[HW]", description="product code"),
    _o("revision", 0x1018, 3, "u", 4, rate=ONE, certainty="[HW]", description="revision number"),
    _o("serial", 0x1018, 4, "u", 4, rate=ONE, certainty="[HW]",
       description="serial number (the stable unique id)"),
    _o("device_name", 0x1008, 0, "str", 0, rate=ONE, certainty="[RE?]",
       description="manufacturer device name"),
    _o("software_version", 0x100A, 0, "str", 0, rate=ONE, certainty="[RE?]",
       description="manufacturer software version"),
    _o("battery_type", 0x6020, 1, "u", 1, rate=ONE, alt_sizes=(2, 4), certainty="[STD] verify",
       description="CiA 418 battery type"),
    _o("capacity", 0x6020, 2, "u", 2, unit="Ah", rate=ONE, alt_sizes=(4,), lo=1.0, hi=100000.0,
       certainty="[STD] verify", description="CiA 418 Ah capacity"),
    _o("rated_charge_current", 0x6020, 3, "u", 2, unit="A", rate=ONE, alt_sizes=(4,),
       certainty="[STD] verify", description="CiA 418 maximum charge current"),
    _o("cells", 0x6020, 4, "u", 1, rate=ONE, alt_sizes=(2, 4), lo=1, hi=64,
       certainty="[STD] verify", description="CiA 418 number of cells"),
)

BY_KEY: dict[str, ObjectDef] = {o.key: o for o in OBJECTS}
BY_ADDRESS: dict[tuple[int, int], ObjectDef] = {(o.index, o.subindex): o for o in OBJECTS}
IDENTITY_KEYS = ("vendor", "product", "revision", "serial")

#: Bits of the error (2004:00) and warning (2005:00) bitfields -> Venus alarm path [RE?]
ALARM_BITS: tuple[tuple[int, str], ...] = (
    (0, "/Alarms/HighCellVoltage"),
    (1, "/Alarms/LowCellVoltage"),
    (2, "/Alarms/HighVoltage"),
    (3, "/Alarms/LowVoltage"),
    (4, "/Alarms/HighChargeCurrent"),
    (5, "/Alarms/HighDischargeCurrent"),
    (6, "/Alarms/HighTemperature"),
    (7, "/Alarms/LowTemperature"),
    (8, "/Alarms/InternalFailure"),
)
#: error bits that forbid charging / discharging
BLOCKS_CHARGE = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 8)
BLOCKS_DISCHARGE = (1 << 1) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 8)

#: PDO communication (1800-1803) and mapping (1A00-1A03) parameters, read by SDO only
TPDO_COMM = tuple(0x1800 + k for k in range(4))
TPDO_MAP = tuple(0x1A00 + k for k in range(4))

#: abort codes that say the object is not there: remembered per firmware, not asked again.
#: Every other code (busy, no data, general error, a timeout) is asked again next cycle.
ABORT_MISSING = frozenset({0x06020000, 0x06090011})

#: SDO abort codes worth naming in logs
ABORT_NAMES = {
    0x05040000: "SDO protocol timed out",
    0x06010000: "unsupported access",
    0x06010001: "write-only object",
    0x06020000: "object does not exist",
    0x06090011: "sub-index does not exist",
    0x060A0023: "resource not available",
    0x08000000: "general error",
    0x08000020: "data cannot be transferred",
    0x08000024: "no data available",
}


class DecodeError(ValueError):
    """A response that cannot be used (wrong size, implausible value)."""


def decode(obj: ObjectDef, data: bytes, sized: bool = True) -> float | int | str:
    """Decode the bytes of an SDO upload (or a TPDO slice) of ``obj``.

    ``sized`` False: an expedited answer without the size indicated (CiA 301: 4 bytes, of which
    the object's own bytes are data, the rest unspecified): decoded by the object's declared
    type, never by the length of the answer.

    Raises :class:`DecodeError` on a size the object never has or a value outside its plausible
    range; the caller publishes ``None`` then.
    """
    if obj.kind == "str":
        return bytes(data).split(b"\0", 1)[0].decode("ascii", "replace").strip()
    if not sized:
        if len(data) != 4 or obj.size > 4:
            raise DecodeError(f"{obj.label} {obj.key}: unsized answer of {len(data)} bytes")
        data = bytes(data)[:obj.size]
    if len(data) not in obj.sizes:
        raise DecodeError(f"{obj.label} {obj.key}: {len(data)} bytes, expected "
                          f"{' or '.join(str(s) for s in obj.sizes)}")
    raw = int.from_bytes(bytes(data), "little", signed=obj.kind == "i")
    value: float | int = raw * obj.scale if obj.scale != 1.0 else raw
    if (obj.lo is not None and value < obj.lo) or (obj.hi is not None and value > obj.hi):
        raise DecodeError(f"{obj.label} {obj.key}: {value} outside {obj.lo}..{obj.hi}")
    return value


def encode(obj: ObjectDef, value: float | int | str, size: int | None = None) -> bytes:
    """The bytes a node sends for ``value`` (used by the simulator and tests)."""
    if obj.kind == "str":
        return str(value).encode("ascii")
    n = size or obj.size
    raw = round(float(value) / obj.scale)
    return int(raw).to_bytes(n, "little", signed=obj.kind == "i")


_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_firmware(software_version: str | None, revision: int | None) -> tuple[int, ...] | None:
    """Firmware version from 100A (``"1.2.0"``, ``"V1.2"``) or else from 1018:03.

    CiA 301 puts the major revision in the high 16 bits of 1018:03 and the minor in the low 16.
    """
    if software_version:
        m = _VERSION_RE.search(software_version)
        if m:
            return tuple(int(g) for g in m.groups() if g is not None)
    if revision is not None:
        return (revision >> 16, revision & 0xFFFF)
    return None


def format_firmware(fw: tuple[int, ...] | None) -> str | None:
    return None if fw is None else ".".join(str(p) for p in fw)


def pdo_mapping_entry(raw: int) -> tuple[int, int, int]:
    """A 1A0x mapping entry -> (index, sub-index, length in bits)."""
    return (raw >> 16) & 0xFFFF, (raw >> 8) & 0xFF, raw & 0xFF


def sdo_request_kind(data: bytes) -> str:
    """What an SDO client frame (0x600+n) asks for: ``upload``, ``upload-segment``, ``abort``,
    ``download``, ``download-segment``, ``block-upload``, ``block-download`` or ``invalid``."""
    if not data:
        return "invalid"
    ccs = data[0] >> 5
    return {0: "download-segment", 1: "download", 2: "upload", 3: "upload-segment",
            4: "abort", 5: "block-upload", 6: "block-download"}.get(ccs, "invalid")


SDO_ADDR = struct.Struct("<BHB")
