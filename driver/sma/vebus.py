"""The vebus view of a Sunny Island: which D-Bus path comes from which frame (pure).

:func:`paths` turns a :class:`~driver.sma.sistate.SiSnapshot` plus the controller's decision
into ``{path: value}`` for ``com.victronenergy.vebus.*``; ``None`` = invalid (frames older than
5 s). Publishing is done by :mod:`driver.sma.main` through the Venus edge.

Sign conventions: Venus ``/Dc/0/Current`` is + = charging (0x305 is + = discharging);
``/Ac/ActiveIn/L*/P`` is + = drawn from the grid/generator (0x300); ``/Ac/Out/L*/P`` is the load,
AC-in power plus inverter power (0x301, + = inverting).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from driver.sma.controller import PHASE_STATE, Level, Output, Phase
from driver.sma.sistate import SiSnapshot

#: /FirmwareVersion we publish: 0xFFFFFF, "not known" — the Sunny Island's firmware is not on
#: its CAN bus. gui-v2 shows exactly this number as "--"; it is an integer >= 0x422, so
#: systemcalc's DVCC does not raise FirmwareInsufficient, and above gui-v2's 0x400/0x506 gates
#: (docs/paths.md, "Firmware"). The bridge's own version is /Mgmt/ProcessVersion.
FIRMWARE_VERSION = 0xFFFFFF
FIRMWARE_UNKNOWN_TEXT = "unknown"
PRODUCT_ID = 0xA3F0  # not a Victron product id; marks an emulated vebus device
PRODUCT_NAME = "SMA Sunny Island (CanBridge)"

# /Mode values
MODE_ON = 3
MODE_OFF = 4

# /Ac/ActiveIn/ActiveInput
INPUT_GRID = 0
INPUT_GENERATOR = 1
INPUT_NONE = 240

DC_ASSIST_W = 100.0  # an inverter power above this with the grid connected means assisting

#: every path the service publishes, with its initial value and whether it is writeable
STATIC_PATHS: dict[str, Any] = {
    "/Ac/NumberOfPhases": None, "/Ac/NumberOfAcInputs": 2,
    "/Ac/ActiveIn/ActiveInput": None, "/Ac/ActiveIn/Connected": None, "/Ac/ActiveIn/P": None,
    "/Ac/Out/P": None, "/Dc/0/Voltage": None, "/Dc/0/Current": None, "/Dc/0/Power": None,
    "/Dc/0/Temperature": None, "/Soc": None, "/State": None, "/VebusChargeState": None,
    "/VebusMainState": None, "/VebusError": 0, "/ModeIsAdjustable": 1,
    "/Alarms/LowBattery": 0, "/Alarms/GridLost": 0, "/Alarms/BmsConnectionLost": 0,
    "/Alarms/HighTemperature": 0, "/Alarms/Overload": 0, "/Alarms/Ripple": 0,
    "/Alarms/TemperatureSensor": 0, "/Alarms/VoltageSensor": 0, "/Alarms/PhaseRotation": 0,
    # The Sunny Island's CAN frames do not carry its AC input current limits (GdCurNom 232.03,
    # GnCurNom 234.03 are parameters, not frame signals) and the bridge cannot set them: the
    # limits are the user's copy of them (settings Sma/AcIn1CurrentLimit, Sma/AcIn2CurrentLimit,
    # filled in by :func:`paths`), read-only and not adjustable, so gui-v2 shows the value with
    # "fixed in the system configuration" instead of a dialog whose write would fail
    # (docs/paths.md, "AC input current limits").
    "/Ac/In/1/CurrentLimit": None, "/Ac/In/1/CurrentLimitIsAdjustable": 0,
    "/Ac/In/2/CurrentLimit": None, "/Ac/In/2/CurrentLimitIsAdjustable": 0,
    "/Ac/ActiveIn/CurrentLimit": None, "/Ac/ActiveIn/CurrentLimitIsAdjustable": 0,
    # /Bms/*: the bridge is the Sunny Island's BMS; these mirror its own charge/discharge
    # decision (the limits it sends in 0x351). No VE.Bus BMS: BmsExpected 0, no /Bms/BmsType
    # (systemcalc's VE.Bus-BMS logic keys on BmsType == 2 and stays out).
    "/Bms/AllowToCharge": None, "/Bms/AllowToDischarge": None, "/Bms/BmsExpected": 0,
    "/FirmwareSubVersion": 0,
    # systemcalc shows charge-current control (DVCC) only for a vebus with the BOL frame
    "/FirmwareFeatures/BolFrame": 1,
    "/Sma/ActiveError": None, "/Sma/OperatingState": None, "/Sma/ChargeVoltageSetpoint": None,
    "/Sma/Flags": None, "/Sma/PvPower": None,
    "/CanBridge/Ladder": None, "/CanBridge/ChargePhase": None, "/CanBridge/DataAge": None,
    "/CanBridge/Implausible": "", "/CanBridge/Cvl": None, "/CanBridge/Ccl": None,
    "/CanBridge/Dcl": None, "/CanBridge/SocSent": None, "/CanBridge/RxFrames": 0,
    "/CanBridge/RxIgnored": 0, "/CanBridge/TxFrames": 0, "/CanBridge/TxFailures": 0,
    "/CanBridge/Reopens": 0,
}
for _n in (1, 2, 3):
    for _q in ("V", "I", "F", "P"):
        STATIC_PATHS[f"/Ac/ActiveIn/L{_n}/{_q}"] = None
        STATIC_PATHS[f"/Ac/Out/L{_n}/{_q}"] = None
    for _a in ("HighTemperature", "Overload", "LowBattery", "Ripple"):
        STATIC_PATHS[f"/Alarms/L{_n}/{_a}"] = 0

#: /VebusMainState (VE.Bus device state) for a /State that is not charging
MAIN_STATE = {0: 2, 2: 0, 8: 8, 9: 4, 10: 7}

LEVEL_TEXT = {Level.STARTUP: "waiting for battery data", Level.NORMAL: "normal",
              Level.STALE: "battery data stale", Level.ALARM: "alarm: charge current 0",
              Level.STOPPED: "stopped: battery data lost"}


def _w(kw: float | None) -> float | None:
    return None if kw is None else round(kw * 1000.0, 1)


def active_input(flags: Any) -> int:
    """/Ac/ActiveIn/ActiveInput from 0x307: grid, generator (GnRn) or none."""
    if flags is None or not (flags.gd_on and flags.ext_vf_ok):
        return INPUT_NONE
    return INPUT_GENERATOR if flags.gn_rn else INPUT_GRID


def phase_powers(snap: SiSnapshot, now: float, phases: int) -> list[tuple[float, float]] | None:
    """Per phase (p_in, p_inv) in W from fresh 0x300/0x301, for the energy counters."""
    ext = snap.get(0x300, now)
    inv = snap.get(0x301, now)
    if ext is None or inv is None:
        return None
    out = []
    for n in range(1, phases + 1):
        pin, pinv = ext[f"ExtActivePowerL{n}"], inv[f"InvActivePowerL{n}"]
        if pin is None or pinv is None:
            return None
        out.append((pin * 1000.0, pinv * 1000.0))
    return out


def vebus_state(flags: Any, level: Level, phase: Phase, dc_current: float | None,
                inv_power: float | None) -> int | None:
    """/State: off, fault, bulk/absorption/float (charging), passthru, inverting, assisting."""
    if flags is None:
        return None
    if flags.error:
        return 2
    if not flags.run or level == Level.STOPPED:
        return 0
    connected = flags.gd_on and flags.ext_vf_ok
    if connected:
        if dc_current is not None and dc_current > 0.5:
            return PHASE_STATE[phase]
        if inv_power is not None and inv_power > DC_ASSIST_W:
            return 10
        return 8
    return 9


def input_limits(active: int | None, grid: float | None,
                 generator: float | None) -> dict[str, float | None]:
    """The AC input current limits (A per phase): ``/Ac/In/1`` the grid's (Sunny Island
    parameter 232.03 GdCurNom), ``/Ac/In/2`` the generator's (234.03 GnCurNom), both as the
    user entered them; ``/Ac/ActiveIn/CurrentLimit`` the active input's. With no input active
    (240) or the active input not known, the grid's (input 1): a fixed choice, so the number
    does not change while no input is connected (docs/paths.md)."""
    return {"/Ac/In/1/CurrentLimit": grid, "/Ac/In/2/CurrentLimit": generator,
            "/Ac/ActiveIn/CurrentLimit": generator if active == INPUT_GENERATOR else grid}


def paths(snap: SiSnapshot, now: float, phases: int, out: Output | None,
          bms_lost: int, *, limits: tuple[float | None, float | None] = (None, None)
          ) -> dict[str, Any]:
    """Every dynamic path's value (None = invalid). ``limits``: the (grid, generator) AC input
    current limits from the settings (None = not a usable value)."""
    p: dict[str, Any] = {"/Ac/NumberOfPhases": phases}
    ext = snap.get(0x300, now)
    inv = snap.get(0x301, now)
    ac1 = snap.get(0x304, now)
    ac2 = snap.get(0x309, now)
    bat = snap.get(0x305, now)
    st = snap.get(0x306, now)
    fl = snap.get(0x307, now)
    pv = snap.get(0x30A, now)
    flags = fl["flags"] if fl else None
    in_sum: float | None = 0.0
    out_sum: float | None = 0.0
    inv_sum = 0.0
    for n in range(1, 4):
        used = n <= phases
        pin = _w(ext[f"ExtActivePowerL{n}"]) if ext and used else None
        pinv = _w(inv[f"InvActivePowerL{n}"]) if inv and used else None
        vin = ac2[f"Ac2VoltageL{n}"] if ac2 and used else None
        vout = ac1[f"Ac1VoltageL{n}"] if ac1 and used else None
        pout = None if pin is None or pinv is None else round(pin + pinv, 1)
        p[f"/Ac/ActiveIn/L{n}/P"] = pin
        p[f"/Ac/ActiveIn/L{n}/V"] = vin
        p[f"/Ac/ActiveIn/L{n}/F"] = ac2["Ac2Frequency"] if ac2 and used else None
        p[f"/Ac/ActiveIn/L{n}/I"] = round(pin / vin, 2) if pin is not None and vin else None
        p[f"/Ac/Out/L{n}/P"] = pout
        p[f"/Ac/Out/L{n}/V"] = vout
        p[f"/Ac/Out/L{n}/F"] = ac1["Ac1Frequency"] if ac1 and used else None
        p[f"/Ac/Out/L{n}/I"] = round(pout / vout, 2) if pout is not None and vout else None
        p[f"/Alarms/L{n}/Overload"] = (2 if flags.overload else 0) if flags and used else 0
        if used:
            in_sum = None if in_sum is None or pin is None else in_sum + pin
            out_sum = None if out_sum is None or pout is None else out_sum + pout
            inv_sum += pinv or 0.0
    p["/Ac/ActiveIn/P"] = None if in_sum is None else round(in_sum, 1)
    p["/Ac/Out/P"] = None if out_sum is None else round(out_sum, 1)
    ai = active_input(flags) if flags else None
    p["/Ac/ActiveIn/ActiveInput"] = ai
    p["/Ac/ActiveIn/Connected"] = None if ai is None else int(ai != INPUT_NONE)
    p.update(input_limits(ai, *limits))
    v = bat["SiBatteryVoltage"] if bat else None
    i = bat["BatteryCurrentCharging"] if bat else None
    p["/Dc/0/Voltage"] = v
    p["/Dc/0/Current"] = i
    p["/Dc/0/Power"] = round(v * i) if v is not None and i is not None else None
    p["/Dc/0/Temperature"] = bat["SiBatteryTemperature"] if bat else None
    p["/Soc"] = bat["SiSoc"] if bat else None
    p["/Sma/ActiveError"] = st["ActiveError"] if st else None
    p["/Sma/OperatingState"] = st["OperatingState"] if st else None
    p["/Sma/ChargeVoltageSetpoint"] = st["SiChargeVoltageSetpoint"] if st else None
    p["/Sma/Flags"] = (f"{fl['RelayWord']:04X} {fl['FunctionWord']:04X} {fl['StatusWord']:04X}"
                       if fl else None)
    p["/Sma/PvPower"] = _w(pv["PvPower"]) if pv else None
    level = out.level if out else Level.STARTUP
    phase = out.phase if out else Phase.BULK
    p["/State"] = vebus_state(flags, level, phase, i, inv_sum if inv else None)
    charging = p["/State"] in PHASE_STATE.values()
    p["/VebusChargeState"] = int(phase) if charging else (0 if p["/State"] is not None else None)
    p["/VebusMainState"] = (9 if charging else MAIN_STATE.get(p["/State"])) \
        if p["/State"] is not None else None
    p["/VebusError"] = 0
    p["/Alarms/GridLost"] = 2 if snap.grid_lost else 0
    p["/Alarms/BmsConnectionLost"] = bms_lost
    p["/Alarms/Overload"] = (2 if flags.overload else 0) if flags else 0
    low = out is not None and "LowVoltage" in out.values.alarms
    lowwarn = out is not None and "LowVoltage" in out.values.warnings
    p["/Alarms/LowBattery"] = 2 if low else (1 if lowwarn else 0)
    for n in range(1, 4):
        # a DC condition: every used phase's unit sees it, as each unit of a MultiPlus system
        p[f"/Alarms/L{n}/LowBattery"] = p["/Alarms/LowBattery"] if n <= phases else 0
    # the bridge's own decision: what it allows the Sunny Island in 0x351
    p["/Bms/AllowToCharge"] = None if out is None else int(out.values.ccl > 0)
    p["/Bms/AllowToDischarge"] = None if out is None else int(out.values.dcl > 0)
    p["/CanBridge/RxFrames"] = snap.received
    p["/CanBridge/RxIgnored"] = snap.ignored
    if out is not None:
        p["/CanBridge/Ladder"] = LEVEL_TEXT[out.level]
        p["/CanBridge/ChargePhase"] = out.phase.name.lower()
        p["/CanBridge/DataAge"] = round(out.data_age, 1)
        p["/CanBridge/Implausible"] = out.implausible
        p["/CanBridge/Cvl"] = out.values.cvl
        p["/CanBridge/Ccl"] = out.values.ccl
        p["/CanBridge/Dcl"] = out.values.dcl
        p["/CanBridge/SocSent"] = out.values.soc_hr
    return p


# -- texts --------------------------------------------------------------------------------------
# GetText like mk2-dbus on a real MultiPlus-II (reference recording): unit suffixes, the number
# of decimals it uses, and words for enumerations. Table in docs/paths.md.

STATE_TEXT = {0: "off", 1: "low power", 2: "fault", 3: "bulk", 4: "absorption", 5: "float",
              6: "storage", 7: "equalize", 8: "passthru", 9: "inverting", 10: "assisting",
              11: "power supply", 252: "external control"}
MODE_TEXT = {1: "charger only", 2: "inverter only", 3: "on", 4: "off"}
CHARGE_STATE_TEXT = {0: "init", 1: "bulk", 2: "absorption", 3: "float", 4: "storage",
                     5: "repeated absorption", 6: "forced absorption", 7: "equalise",
                     8: "bulk stopped"}
MAIN_STATE_TEXT = {0: "down", 1: "startup", 2: "off", 3: "slave", 4: "invert",
                   5: "invert half", 6: "invert aes", 7: "power assist", 8: "bypass",
                   9: "charge"}
ALARM_TEXT = {0: "ok", 1: "warning", 2: "alarm"}
YES_NO = {0: "no", 1: "yes"}

_FORMATS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rx), fmt) for rx, fmt in (
        (r"^/Ac/(ActiveIn|Out)/L\d/V$", "{:.0f}V"),
        (r"^/Ac/(ActiveIn|Out)/L\d/I$", "{:.1f}A"),
        (r"^/Ac/(ActiveIn|Out)/L\d/F$", "{:.1f}Hz"),
        (r"^/Ac/(ActiveIn|Out)/(L\d/)?P$", "{:.0f}W"),
        (r"^/Ac/(ActiveIn|In/\d)/CurrentLimit$", "{:.1f}A"),
        (r"^/Dc/0/Voltage$", "{:.2f}V"),
        (r"^/Dc/0/(Current|MaxChargeCurrent)$", "{:.1f}A"),
        (r"^/Dc/0/Power$", "{:.0f}W"),
        (r"^/Dc/0/Temperature$", "{:.1f}°C"),
        (r"^/BatteryOperationalLimits/\w+Voltage$", "{:.1f}V"),
        (r"^/BatteryOperationalLimits/\w+Current$", "{:.1f}A"),
        (r"^/Energy/\w+$", "{:.2f}kWh"),
        (r"^/Soc$", "{:.1f}%"),
    ))
_ENUMS: dict[str, dict[int, str]] = {
    "/State": STATE_TEXT, "/Mode": MODE_TEXT, "/VebusChargeState": CHARGE_STATE_TEXT,
    "/VebusMainState": MAIN_STATE_TEXT, "/Ac/ActiveIn/Connected": YES_NO,
}


def text(path: str, value: Any) -> str:
    """GetText of a vebus path (``gettextcallback``): "50.1Hz", "absorption", "ok"."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return "---"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if path == "/FirmwareVersion":
        return FIRMWARE_UNKNOWN_TEXT if value == FIRMWARE_VERSION else str(value)
    enum = ALARM_TEXT if path.startswith("/Alarms/") else _ENUMS.get(path)
    if enum is not None:
        return enum.get(int(value), str(value))
    for rx, fmt in _FORMATS:
        if rx.match(path):
            out = fmt.format(value)
            return out[1:] if re.match(r"-0(\.0*)?[^\d.]", out) else out  # no "-0.0A"
    return str(value)


class CustomName:
    """``/CustomName`` of the vebus service: writeable (Device info -> Name), kept in
    ``/Settings/Devices/<uid>/CustomName`` like every Venus device's name."""

    def __init__(self, settings: Any, uid: str) -> None:
        self.settings = settings
        self.setting = f"/Settings/Devices/{uid}/CustomName"
        self.svc: Any = None
        self.initial = settings.add(self.setting, "", 0, 0, self._changed)

    def add_to(self, svc: Any, gettext: Callable[[str, Any], str] = text) -> None:
        """Add the path to an unregistered service."""
        svc.add_path("/CustomName", self.initial or "", writeable=True,
                     onchangecallback=self._written, gettextcallback=gettext)
        self.svc = svc

    def _written(self, path: str, value: Any) -> bool:
        if not isinstance(value, str) or len(value) > 64:
            return False
        return bool(self.settings.set(self.setting, value) == 0)

    def _changed(self, path: str, old: Any, new: Any) -> None:
        if self.svc is not None:
            self.svc["/CustomName"] = new or ""
