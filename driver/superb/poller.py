"""The generic poller: reads the object table from one battery, one SDO transaction at a time.

Each :class:`NodePoller` is a thread for one node ID. Every cycle it reads the fast objects
(and the slow ones when due), skips objects the node answered with an SDO abort (until the
node reboots), takes objects that arrive in TPDOs from those instead of polling them, decides
whether the node is online (heartbeat age and consecutive timeouts), and hands a
:class:`NodeReport` to ``on_report`` (called on the poller thread: the caller moves it to the
main loop). Nodes are polled concurrently because each node has its own thread.

No D-Bus here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from driver.superb import objects as objs
from driver.superb.canport import BadResponse, BusDown, CanPort, SdoAbort, SdoTimeout

log = logging.getLogger("canbridge.superb.poll")


@dataclass(frozen=True)
class PollConfig:
    """Timing settings shared by all pollers (replaced as a whole when a setting changes)."""

    interval: float = 1.0
    slow_interval: float = 30.0
    sdo_timeout: float = 0.3
    offline_after: int = 3
    heartbeat_timeout: float = 3.5


@dataclass
class Counters:
    sdo_ok: int = 0
    sdo_timeouts: int = 0
    sdo_aborts: int = 0
    bad_responses: int = 0
    bus_errors: int = 0
    tpdo_frames: int = 0
    cycles: int = 0
    reboots: int = 0


@dataclass(frozen=True)
class NodeReport:
    """Everything known about one node after a poll cycle (values ``None`` = invalid)."""

    node_id: int
    online: bool
    serial: int | None = None
    firmware: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    aborted: dict[str, int] = field(default_factory=dict)
    tpdo_keys: tuple[str, ...] = ()
    heartbeat_age: float | None = None
    heartbeat_state: int | None = None
    frames: int = 0
    counters: Counters = field(default_factory=Counters)
    last_error: str = ""
    cycle_time: float = 0.0
    seq: int = 0
    state: str = "starting"  #: starting, online, offline, bus-down


@dataclass
class _TpdoMap:
    cob_id: int
    entries: list[tuple[objs.ObjectDef | None, int, int]]  # (object, byte offset, byte length)


class NodePoller:
    """Polls one battery in its own thread."""

    def __init__(self, node_id: int, port: CanPort, config: Callable[[], PollConfig],
                 on_report: Callable[[NodeReport], None],
                 table: tuple[objs.ObjectDef, ...] = objs.OBJECTS) -> None:
        self.node_id = node_id
        self.port = port
        self._config = config
        self._on_report = on_report
        self._fast = [o for o in table if o.rate is objs.Rate.FAST]
        self._slow = [o for o in table if o.rate is objs.Rate.SLOW]
        self._once = [o for o in table if o.rate is objs.Rate.ONCE]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = Counters()
        self._reset_node_state()
        self._online = False
        self._ever_online = False
        self._consecutive_timeouts = 0
        self._last_ok = 0.0
        self._last_error = ""
        self._seq = 0
        self._boot_count = port.seen(node_id).boot_count
        self._tpdo_lock = threading.Lock()
        self._tpdo_values: dict[str, tuple[Any, float]] = {}
        self._tpdo_subs: list[tuple[int, Callable[[int, bytearray, float], None]]] = []

    def _reset_node_state(self) -> None:
        self._identified = False
        self._identity: dict[str, Any] = {}
        self._firmware: tuple[int, ...] | None = None
        self._aborted: dict[str, int] = {}
        self._values: dict[str, Any] = {}
        self._sizes: dict[str, int] = {}
        self._next_slow = 0.0

    # -- thread --------------------------------------------------------------------------------
    def start(self) -> None:
        self.port.on_heartbeat(self.node_id, self._heartbeat)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"superb-node-{self.node_id}")
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        self.port.drop_heartbeat(self.node_id, self._heartbeat)
        self._drop_tpdos()
        if join and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.port.forget(self.node_id)

    def wake(self) -> None:
        """Start the next cycle now (a setting changed, the node came back)."""
        self._wake.set()

    def _heartbeat(self, node_id: int, state: int) -> None:
        # Receive thread: a boot-up, or a heartbeat from a node we think is offline, re-probes.
        if state == 0 or not self._online:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                report = self.cycle()
            except Exception:  # a bug must not kill the node's thread silently
                log.exception("node %d: poll cycle failed", self.node_id)
                report = self._report(0.0)
            if self._stop.is_set():
                return
            self._on_report(report)
            cfg = self._config()
            delay = max(0.0, cfg.interval - (time.monotonic() - started))
            self._wake.wait(delay)
            self._wake.clear()

    # -- one cycle ---------------------------------------------------------------------------------
    def cycle(self) -> NodeReport:
        """Run one poll cycle (blocking) and return its report."""
        cfg = self._config()
        t0 = time.monotonic()
        self.counters.cycles += 1
        seen = self.port.seen(self.node_id)
        if seen.boot_count != self._boot_count:
            self._boot_count = seen.boot_count
            self.counters.reboots += 1
            log.info("node %d rebooted (boot-up message); probing it again", self.node_id)
            self._reset_node_state()
        if not self.port.is_open:
            self._go_offline("CAN interface not open", bus=True)
            return self._report(time.monotonic() - t0, state="bus-down")
        # One cheap probe per cycle while offline; a node that answers is probed in full.
        if not self._online and (self._ever_online or self._identified):
            probe = self._read(objs.BY_KEY["serial"], cfg)
            if probe is _TIMEOUT or probe is _BUSDOWN:
                self._update_online(cfg)
                return self._report(time.monotonic() - t0)
            if (probe is not _ABORT and self._identity.get("serial") is not None
                    and probe != self._identity.get("serial")):
                log.warning("node %d: serial changed %s -> %s (another battery)",
                            self.node_id, self._identity.get("serial"), probe)
            self._reset_node_state()
        if not self._identified and not self._identify(cfg):
            self._update_online(cfg)
            return self._report(time.monotonic() - t0)
        due = list(self._fast)
        if t0 >= self._next_slow:
            due += self._slow
            self._next_slow = t0 + cfg.slow_interval
        tpdo = self._fresh_tpdo(cfg)
        for obj in due:
            if obj.key in tpdo:
                self._values[obj.key] = tpdo[obj.key]
                continue
            if not self._wanted(obj):
                continue
            result = self._read(obj, cfg)
            if result is _TIMEOUT or result is _BUSDOWN:
                if self._consecutive_timeouts >= cfg.offline_after or result is _BUSDOWN:
                    break
                continue
            if result is not _ABORT:
                self._values[obj.key] = result
        self._update_online(cfg)
        return self._report(time.monotonic() - t0)

    def _wanted(self, obj: objs.ObjectDef) -> bool:
        if obj.key in self._aborted:
            return False
        return not (obj.min_fw and self._firmware is not None and self._firmware < obj.min_fw)

    def _identify(self, cfg: PollConfig) -> bool:
        """Read identity, firmware and fixed parameters; False if the node does not answer."""
        for obj in self._once:
            if not self._wanted(obj):
                continue
            result = self._read(obj, cfg)
            if result is _TIMEOUT or result is _BUSDOWN:
                return False
            if result is not _ABORT:
                self._identity[obj.key] = result
        self._firmware = objs.parse_firmware(self._identity.get("software_version"),
                                             self._identity.get("revision"))
        vendor = self._identity.get("vendor")
        if vendor is not None and vendor != objs.SUPERB_VENDOR_ID:
            log.warning("node %d: vendor 0x%X is not SuperB (0x%X); reading it anyway",
                        self.node_id, vendor, objs.SUPERB_VENDOR_ID)
        self._read_tpdo_config(cfg)
        self._identified = True
        self._next_slow = 0.0
        log.info("node %d: serial %s, firmware %s, %s", self.node_id,
                 self._identity.get("serial"), objs.format_firmware(self._firmware),
                 self._identity.get("device_name") or "unnamed")
        return True

    # -- reading -----------------------------------------------------------------------------------
    def _read(self, obj: objs.ObjectDef, cfg: PollConfig) -> Any:
        """Read one object. Returns its value, None (unusable), or a marker."""
        try:
            data = self.port.upload(self.node_id, obj.index, obj.subindex, cfg.sdo_timeout)
        except SdoTimeout:
            self.counters.sdo_timeouts += 1
            self._consecutive_timeouts += 1
            self._last_error = f"{obj.label} {obj.key}: no answer"
            return _TIMEOUT
        except SdoAbort as exc:
            self.counters.sdo_aborts += 1
            self._consecutive_timeouts = 0
            self._last_ok = time.monotonic()
            self._aborted[obj.key] = exc.code
            self._values[obj.key] = None
            log.info("node %d: %s %s answered SDO abort 0x%08X (%s); not asking again until "
                     "it reboots", self.node_id, obj.label, obj.key, exc.code,
                     objs.ABORT_NAMES.get(exc.code, "unknown code"))
            return _ABORT
        except BadResponse as exc:
            self.counters.bad_responses += 1
            self._last_error = f"{obj.label} {obj.key}: {exc}"
            log.warning("node %d: %s", self.node_id, self._last_error)
            return None
        except BusDown as exc:
            # A frame that cannot be sent (bus-off, ENOBUFS) is a failed transaction too:
            # keep publishing old values and the node would look healthy forever.
            self.counters.bus_errors += 1
            self._consecutive_timeouts += 1
            self._last_error = str(exc)
            log.warning("node %d: %s", self.node_id, exc)
            return _BUSDOWN
        self.counters.sdo_ok += 1
        self._consecutive_timeouts = 0
        self._last_ok = time.monotonic()
        self._sizes[obj.key] = len(data)
        try:
            return objs.decode(obj, data)
        except objs.DecodeError as exc:
            self.counters.bad_responses += 1
            self._last_error = str(exc)
            log.warning("node %d: %s", self.node_id, exc)
            return None

    def _read_raw_u32(self, index: int, sub: int, cfg: PollConfig) -> int | None:
        try:
            data = self.port.upload(self.node_id, index, sub, cfg.sdo_timeout)
        except (SdoAbort, SdoTimeout, BadResponse, BusDown):
            return None
        self.counters.sdo_ok += 1
        return int.from_bytes(data[:4], "little") if 1 <= len(data) <= 4 else None

    # -- TPDOs -------------------------------------------------------------------------------------
    def _read_tpdo_config(self, cfg: PollConfig) -> None:
        """Read 1800-1803 / 1A00-1A03 (SDO uploads only) and listen to TPDOs of known objects."""
        self._drop_tpdos()
        maps: list[_TpdoMap] = []
        for comm, mapping in zip(objs.TPDO_COMM, objs.TPDO_MAP, strict=True):
            cob = self._read_raw_u32(comm, 1, cfg)
            if cob is None:
                break
            if cob & 0x80000000 or cob & 0x1FFFF800:
                continue  # PDO not valid, or a 29-bit id
            count = self._read_raw_u32(mapping, 0, cfg)
            if not count:
                continue
            entries: list[tuple[objs.ObjectDef | None, int, int]] = []
            offset = 0
            for sub in range(1, min(count, 8) + 1):
                raw = self._read_raw_u32(mapping, sub, cfg)
                if raw is None:
                    entries = []
                    break
                index, subindex, bits = objs.pdo_mapping_entry(raw)
                if bits % 8:
                    entries = []  # bit-packed mappings are not supported
                    break
                entries.append((objs.BY_ADDRESS.get((index, subindex)), offset, bits // 8))
                offset += bits // 8
            if any(o is not None for o, _, _ in entries) and offset <= 8:
                maps.append(_TpdoMap(cob & 0x7FF, entries))
        for m in maps:
            cb = self._tpdo_callback(m)
            self.port.subscribe(m.cob_id, cb)
            self._tpdo_subs.append((m.cob_id, cb))
            log.info("node %d: TPDO 0x%03X carries %s; not polling those", self.node_id,
                     m.cob_id, ", ".join(o.key for o, _, _ in m.entries if o is not None))

    def _tpdo_callback(self, m: _TpdoMap) -> Callable[[int, bytearray, float], None]:
        def received(can_id: int, data: bytearray, timestamp: float) -> None:
            now = time.monotonic()
            got: dict[str, tuple[Any, float]] = {}
            for obj, offset, length in m.entries:
                if obj is None or offset + length > len(data):
                    continue
                try:
                    got[obj.key] = (objs.decode(obj, bytes(data[offset:offset + length])), now)
                except objs.DecodeError:
                    got[obj.key] = (None, now)
            with self._tpdo_lock:
                self._tpdo_values.update(got)
                self.counters.tpdo_frames += 1
        return received

    def _drop_tpdos(self) -> None:
        for cob, cb in self._tpdo_subs:
            self.port.unsubscribe(cob, cb)
        self._tpdo_subs = []
        with self._tpdo_lock:
            self._tpdo_values = {}

    def _fresh_tpdo(self, cfg: PollConfig) -> dict[str, Any]:
        limit = 2 * cfg.interval + 0.5
        now = time.monotonic()
        with self._tpdo_lock:
            return {k: v for k, (v, t) in self._tpdo_values.items() if now - t <= limit}

    # -- online state ------------------------------------------------------------------------------
    def _update_online(self, cfg: PollConfig) -> None:
        now = time.monotonic()
        seen = self.port.seen(self.node_id)
        hb_age = None if seen.heartbeat_time is None else now - seen.heartbeat_time
        answered_recently = self._last_ok > 0 and now - self._last_ok <= cfg.heartbeat_timeout
        silent = (hb_age is None or hb_age > cfg.heartbeat_timeout) and not answered_recently
        online = (self._identified and self._consecutive_timeouts < cfg.offline_after
                  and not silent)
        if online and not self._online:
            log.info("node %d online", self.node_id)
            self._last_error = ""
            self._ever_online = True
        elif not online and self._online:
            self._go_offline(self._last_error or "no answer")
        self._online = online

    def _go_offline(self, why: str, bus: bool = False) -> None:
        if self._online:
            log.warning("node %d offline: %s", self.node_id, why)
        self._online = False
        self._values = {}
        if bus:
            self._last_error = why

    def _report(self, took: float, state: str | None = None) -> NodeReport:
        self._seq += 1
        seen = self.port.seen(self.node_id)
        hb_age = None if seen.heartbeat_time is None else time.monotonic() - seen.heartbeat_time
        if state is None:
            state = "online" if self._online else ("offline" if self._ever_online or
                                                    self._identified else "starting")
        if not self._online:
            self._values = {}
        values = dict(self._values)
        return NodeReport(
            node_id=self.node_id, online=self._online,
            serial=self._identity.get("serial"),
            firmware=objs.format_firmware(self._firmware),
            identity=dict(self._identity), values=values, sizes=dict(self._sizes),
            aborted=dict(self._aborted), tpdo_keys=tuple(sorted(self._fresh_tpdo(self._config()))),
            heartbeat_age=hb_age, heartbeat_state=seen.heartbeat_state, frames=seen.frames,
            counters=replace(self.counters), last_error=self._last_error, cycle_time=took,
            seq=self._seq, state=state)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TIMEOUT = _Marker("timeout")
_ABORT = _Marker("abort")
_BUSDOWN = _Marker("bus-down")
