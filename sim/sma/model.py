"""The simulated Sunny Island and its battery (pure: no CAN, no clock of its own).

A deliberately simple plant: a 48 V LiFePO4 battery whose voltage is an open-circuit curve of
its state of charge plus current x internal resistance; AC loads; a grid or a generator that
may be available. It obeys the BMS limits it was last sent (CVL, CCL, DCL, DVL), reacts to
0x35C start/stop and 0x00F quick stop, and raises ExtBMSTimeout (stops, and stays stopped until
a start command) when no BMS frame arrived for ``bms_timeout`` seconds.

Like the real one, once stopped it runs again only on a start command, and a start that
arrives while it is still shutting down (``restart_delay`` seconds after the stop) is lost:
the bridge has to repeat it. Byte layouts come from :mod:`sim.sma.wire` (hand-written), not
from the driver's DBC; 0x307 goes out with its sync byte (8 bytes) like the field's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import can

from sim.sma import wire

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
    restart_delay: float = 2.0      # s after a stop during which a start is lost
    stopped_at: float | None = None
    starts_ignored: int = 0
    pv_w: float = 0.0               # DC-coupled solar into the battery (W)
    dc_load_w: float = 0.0          # DC loads on the battery (W)
    sync: int = 0

    @property
    def voltage(self) -> float:
        return ocv(self.soc) + self.battery_current * R_INTERNAL

    @property
    def battery_current(self) -> float:
        """The battery's current (+ = charging): the Sunny Island's plus DC-coupled solar
        minus DC loads. 0x305 carries only the Sunny Island's own share."""
        return self.current + (self.pv_w - self.dc_load_w) / max(1.0, ocv(self.soc))

    @property
    def source(self) -> bool:
        return self.grid or self.generator

    # -- input -----------------------------------------------------------------------------
    def receive(self, msg: can.Message, now: float) -> None:
        fid = msg.arbitration_id
        data = bytes(msg.data)
        if fid in (0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F):
            self.last_bms = now
            self.bms_frames += 1
            if fid == 0x351 and len(data) >= 8:
                lim = wire.decode_351(data)
                self.limits.cvl, self.limits.ccl = lim.cvl, lim.ccl
                self.limits.dcl, self.limits.dvl = lim.dcl, lim.dvl
            elif fid == 0x355 and len(data) >= 6:
                self.limits.soc = wire.decode_355(data)[0]
            elif fid in (0x351, 0x355):
                self.events.append(f"bad frame: 0x{fid:03X} with {len(data)} bytes")
        elif fid == 0x35C:
            cmd = wire.startstop(data)
            if cmd == 1:
                if self.running:
                    return
                if self.stopped_at is not None and now - self.stopped_at < self.restart_delay:
                    self.starts_ignored += 1
                    self.events.append("start ignored: still shutting down")
                    return
                self.events.append("started by 0x35C")
                self.running, self.ext_bms_timeout = True, False
            elif cmd == 2:
                if self.running:
                    self.events.append("stopped by 0x35C")
                    self.stopped_at = now
                self.running = False
        elif fid == 0x00F and data == bytes(8):
            if self.running:
                self.events.append("standby by 0x00F")
                self.stopped_at = now
            self.running = False

    # -- model -----------------------------------------------------------------------------
    def step(self, now: float, dt: float) -> None:
        ref = self.last_bms if self.last_bms is not None else self.started
        if self.running and now - ref > self.bms_timeout:
            self.running = False
            self.stopped_at = now
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
            dc = (self.pv_w - self.dc_load_w) / max(1.0, ocv(self.soc))
            if ocv(self.soc) + (i + dc) * R_INTERNAL > (lim.cvl or 0.0):
                i = max(0.0, ((lim.cvl or 0.0) - ocv(self.soc)) / R_INTERNAL - dc)
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
        self.soc = max(0.0, min(100.0, self.soc + self.battery_current * dt / 36.0
                                / self.capacity_ah))

    # -- output ----------------------------------------------------------------------------
    def flag_words(self) -> tuple[int, int, int]:
        """0x307 relay, function and status words."""
        src = self.source
        relay = wire.RELAY_GNRN if self.generator and not self.grid else 0
        fn = ((wire.FN_RUN if self.running else 0) | (wire.FN_GDON if src else 0)
              | (wire.FN_EXTVFOK if src else 0) | (wire.FN_ERROR if self.ext_bms_timeout else 0))
        st = wire.ST_EXTSRCCONN if src else 0
        return relay, fn, st

    def frames(self) -> list[can.Message]:
        n = self.phases

        def per_phase(total: float) -> tuple[float, float, float]:
            a = [total / n / 1000.0 if k < n else 0.0 for k in range(3)]
            return a[0], a[1], a[2]

        pin, pinv = per_phase(self.p_in), per_phase(self.p_inv)
        on = self.running or self.source
        vout = (230.0 if on else 0.0, 230.0 if on and n > 1 else 0.0,
                230.0 if on and n > 2 else 0.0)
        vin = (230.0 if self.source else 0.0, 230.0 if self.source and n > 1 else 0.0,
               230.0 if self.source and n > 2 else 0.0)
        self.sync = (self.sync + 1) & 0xFF
        return [
            wire.three(0x300, pin, 0.1),
            wire.three(0x301, pinv, 0.1),
            wire.three(0x302, (0.0, 0.0, 0.0), 0.1),
            wire.three(0x303, (0.0, 0.0, 0.0), 0.1),
            wire.ac_voltage(0x304, vout, 50.0),
            wire.battery_305(self.voltage, -self.current, 20.0, self.soc),
            wire.state_306(100, 0, int(self.running), 0, self.limits.cvl),
            wire.flags_307(*self.flag_words(), sync=self.sync),
            wire.load_308(self.load_w / 1000.0),
            wire.ac_voltage(0x309, vin, 50.0 if self.source else 0.0),
            wire.pv_grid_30a(0.0, max(0.0, self.p_in) / 1000.0, max(0.0, -self.p_in) / 1000.0),
        ]
