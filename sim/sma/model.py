"""The simulated Sunny Island and its battery (pure: no CAN, no clock of its own).

A deliberately simple plant: a 48 V LiFePO4 battery whose voltage is an open-circuit curve of
its state of charge plus current x internal resistance; AC loads; a grid or a generator that
may be available. It obeys the BMS limits it was last sent (CVL, CCL, DCL, DVL), reacts to
0x35C start/stop and 0x00F quick stop, and raises ExtBMSTimeout (stops, and stays stopped until
a start command) when no BMS frame arrived for ``bms_timeout`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import can

from driver.sma import frames
from driver.sma.frames import SiFlags

R_INTERNAL = 0.01       # ohm
CHARGER_MAX_A = 120.0   # what the Sunny Island could push without a limit


def ocv(soc: float) -> float:
    """Open-circuit voltage of a 16-cell LiFePO4 pack: flat, then steep above 95 %."""
    v = 50.0 + 4.0 * soc / 100.0
    if soc > 95.0:
        v += 3.0 * (soc - 95.0) / 5.0
    return v


@dataclass
class Limits:
    cvl: float | None = None
    ccl: float | None = None
    dcl: float | None = None
    dvl: float | None = None
    soc: int | None = None


@dataclass
class SunnyIsland:
    capacity_ah: float = 100.0
    soc: float = 60.0
    load_w: float = 800.0
    grid: bool = True
    generator: bool = False
    phases: int = 1
    bms_timeout: float = 60.0
    running: bool = True
    ext_bms_timeout: bool = False
    current: float = 0.0            # A, + = charging
    p_inv: float = 0.0              # W, + = inverting
    p_in: float = 0.0               # W, + = import
    limits: Limits = field(default_factory=Limits)
    last_bms: float | None = None
    started: float = 0.0
    events: list[str] = field(default_factory=list)
    bms_frames: int = 0

    @property
    def voltage(self) -> float:
        return ocv(self.soc) + self.current * R_INTERNAL

    @property
    def source(self) -> bool:
        return self.grid or self.generator

    # -- input -----------------------------------------------------------------------------
    def receive(self, msg: can.Message, now: float) -> None:
        fid = msg.arbitration_id
        try:
            if fid in frames.BMS_IDS:
                self.last_bms = now
                self.bms_frames += 1
                if fid == frames.ID_LIMITS:
                    v = frames.decode_signals(msg)
                    self.limits.cvl = v["ChargeVoltageLimit"]
                    self.limits.ccl = v["ChargeCurrentLimit"]
                    self.limits.dcl = v["DischargeCurrentLimit"]
                    self.limits.dvl = v["DischargeVoltageLimit"]
                elif fid == frames.ID_SOC:
                    self.limits.soc = frames.decode_signals(msg)["Soc"]  # type: ignore[assignment]
            elif fid == frames.ID_STARTSTOP:
                cmd = frames.decode_signals(msg)["StartStopCommand"]
                if cmd == frames.START:
                    if not self.running:
                        self.events.append("started by 0x35C")
                    self.running, self.ext_bms_timeout = True, False
                elif cmd == frames.STOP:
                    if self.running:
                        self.events.append("stopped by 0x35C")
                    self.running = False
            elif fid == frames.ID_QUICKSTOP and bytes(msg.data) == bytes(8):
                if self.running:
                    self.events.append("standby by 0x00F")
                self.running = False
        except frames.FrameError as exc:
            self.events.append(f"bad frame: {exc}")

    # -- model -----------------------------------------------------------------------------
    def step(self, now: float, dt: float) -> None:
        ref = self.last_bms if self.last_bms is not None else self.started
        if self.running and now - ref > self.bms_timeout:
            self.running = False
            self.ext_bms_timeout = True
            self.events.append(f"ExtBMSTimeout: no BMS frames for {now - ref:.1f} s")
        lim = self.limits
        have_limits = lim.cvl is not None and lim.ccl is not None and lim.dcl is not None
        if not self.running or not have_limits:
            self.current = 0.0
            self.p_inv = 0.0
            self.p_in = self.load_w if self.source else 0.0
        elif self.source:
            # charge from the grid/generator within CCL and CVL; loads pass through
            i = min(CHARGER_MAX_A, max(0.0, lim.ccl or 0.0))
            if ocv(self.soc) + i * R_INTERNAL > (lim.cvl or 0.0):
                i = max(0.0, ((lim.cvl or 0.0) - ocv(self.soc)) / R_INTERNAL)
            self.current = i
            self.p_inv = -i * self.voltage
            self.p_in = self.load_w - self.p_inv
        else:
            # invert from the battery within DCL and above DVL
            i = self.load_w / max(1.0, self.voltage)
            if i > (lim.dcl or 0.0) or (lim.dvl is not None and self.voltage < lim.dvl):
                i = 0.0
            self.current = -i
            self.p_inv = i * self.voltage
            self.p_in = 0.0
        self.soc = max(0.0, min(100.0, self.soc + self.current * dt / 36.0 / self.capacity_ah))

    # -- output ----------------------------------------------------------------------------
    def flags(self) -> SiFlags:
        return SiFlags(run=self.running, gd_on=self.source, ext_vf_ok=self.source,
                       gn_rn=self.generator and not self.grid, error=self.ext_bms_timeout,
                       auto_gn=False, overload=False, ext_src_conn=self.source)

    def frames(self) -> list[can.Message]:
        n = self.phases
        def per_phase(total: float) -> list[float]:
            return [total / n / 1000.0 if k < n else 0.0 for k in range(3)]
        pin, pinv = per_phase(self.p_in), per_phase(self.p_inv)
        vout = [230.0 if (k < n and (self.running or self.source)) else 0.0 for k in range(3)]
        vin = [230.0 if (k < n and self.source) else 0.0 for k in range(3)]
        enc = frames.encode_signals
        return [
            enc(0x300, {f"ExtActivePowerL{k+1}": pin[k] for k in range(3)}),
            enc(0x301, {f"InvActivePowerL{k+1}": pinv[k] for k in range(3)}),
            enc(0x302, {f"ExtReactivePowerL{k+1}": 0.0 for k in range(3)}),
            enc(0x303, {f"InvReactivePowerL{k+1}": 0.0 for k in range(3)}),
            enc(0x304, {**{f"Ac1VoltageL{k+1}": vout[k] for k in range(3)},
                        "Ac1Frequency": 50.0}),
            enc(0x305, {"SiBatteryVoltage": self.voltage, "SiBatteryCurrent": -self.current,
                        "SiBatteryTemperature": 20.0, "SiSoc": self.soc}),
            enc(0x306, {"SiSoh": 100, "ChargingProcedure": 0, "OperatingState": int(
                self.running), "ActiveError": 0, "SiChargeVoltageSetpoint": self.limits.cvl}),
            enc(0x307, frames.flags_signals(self.flags())),
            enc(0x308, {"TotalLoadPower": self.load_w / 1000.0}),
            enc(0x309, {**{f"Ac2VoltageL{k+1}": vin[k] for k in range(3)},
                        "Ac2Frequency": 50.0 if self.source else 0.0}),
            enc(0x30A, {"PvPower": 0.0, "GridConsumption": max(0.0, self.p_in) / 1000.0,
                        "GridFeed": max(0.0, -self.p_in) / 1000.0}),
        ]
