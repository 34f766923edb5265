"""The generic poller: reads the object table from one battery, one SDO transaction at a time.

Each :class:`NodePoller` is a task for one node ID, run by its CAN port's SDO loop (one thread
per interface, :mod:`driver.superb.sdoloop`). It first identifies the node (serial,
product, firmware: each object retried with back-off until all three are known; a partial
identity never counts), then every cycle reads the fast objects (and the slow ones when due)
of the table rows that apply to the node's firmware, takes objects that arrive in TPDOs from
those instead of polling them, decides whether the node is online (heartbeat age and
consecutive failed reads) and hands a :class:`NodeReport` to ``on_report`` (called on the
SDO loop's thread: the caller moves it to the main loop). Nodes are polled concurrently: the
loop keeps one transfer open per node, each with its own deadline, so a slow node only ever
delays its own cycle. The poll cycle is a generator (:meth:`NodePoller.steps`) that yields its
reads (:class:`~driver.superb.sdo.Upload`) and gets the answers, or the read's error, back;
:meth:`NodePoller.cycle` runs one cycle and waits for it.

Failed reads: a timeout, an answer that cannot be decoded, a send failure or *any* exception
while reading. A failed read is retried once in the same cycle; ``offline_after`` failed reads
in a row take the node offline (values invalid, limits 0). Every value carries the time it was
read: a value older than its poll interval plus ``max_age`` is reported invalid (``None``), so a
value that stops answering cannot be passed off as fresh while other objects still answer.

Aborts: "object does not exist" (0x06020000, 0x06090011) is remembered for the node's firmware
and the object not asked again (until the firmware changes); every other abort code makes the
value invalid for this cycle and is asked again the next.

No D-Bus here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

from driver.superb import objects as objs
from driver.superb.canport import BadResponse, BusDown, CanPort, SdoAbort, SdoTimeout
from driver.superb.sdo import Upload
from driver.superb.sdoloop import TaskHandle

#: identity objects that must all be known before a node counts as identified; the firmware
#: comes from 100A or, without it, from 1018:03 (revision)
REQUIRED_IDENTITY = ("serial", "product", "revision")
#: longest wait before an identity or fixed-parameter object is asked again (s)
MAX_BACKOFF = 30.0

log = logging.getLogger("canbridge.superb.poll")


@dataclass(frozen=True)
class PollConfig:
    """Timing settings shared by all pollers (replaced as a whole when a setting changes)."""

    interval: float = 1.0
    slow_interval: float = 30.0
    #: how often the temperatures and warning bits are read (objects with Rate.MEDIUM)
    medium_interval: float = 5.0
    sdo_timeout: float = 0.3
    offline_after: int = 3
    heartbeat_timeout: float = 3.5
    #: a value not read again within its poll interval plus this many seconds is invalid
    max_age: float = 3.0


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
    failed_reads: int = 0  #: timeouts, bad answers, send failures, exceptions while reading
    retries: int = 0  #: failed reads asked again in the same cycle
    transient_aborts: int = 0  #: aborts with a code other than "does not exist"
    cycle_errors: int = 0  #: poll cycles that raised (a bug): the node goes offline
    identify_attempts: int = 0


@dataclass(frozen=True)
class NodeReport:
    """Everything known about one node after a poll cycle (values ``None`` = invalid)."""

    node_id: int
    online: bool
    serial: int | None = None
    firmware: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    aborted: dict[str, int] = field(default_factory=dict)  #: last answer was this abort code
    missing: dict[str, int] = field(default_factory=dict)  #: remembered "does not exist"
    stamps: dict[str, float] = field(default_factory=dict)  #: monotonic time each was read
    #: age (s) above which each value counts as unknown: its own poll period + ValueMaxAge
    max_ages: dict[str, float] = field(default_factory=dict)
    sdo: dict[str, Any] = field(default_factory=dict)  #: answers discarded (SdoDiag)
    tpdo_keys: tuple[str, ...] = ()
    heartbeat_age: float | None = None
    heartbeat_state: int | None = None
    frames: int = 0
    counters: Counters = field(default_factory=Counters)
    last_error: str = ""
    cycle_time: float = 0.0
    seq: int = 0
    state: str = "starting"  #: starting, online, offline, bus-down
    taken: float = 0.0  #: monotonic time the report was made

    @property
    def ages(self) -> dict[str, float]:
        """Seconds from each value's read to the report (infinite: never read)."""
        return {k: round(self.taken - self.stamps.get(k, -math.inf), 3) for k in self.values}


@dataclass
class _TpdoMap:
    cob_id: int
    entries: list[tuple[objs.ObjectDef | None, int, int]]  # (object, byte offset, byte length)


def poll_period(obj: objs.ObjectDef | None, cfg: PollConfig) -> float:
    """Seconds between two reads of ``obj`` (at most one read per poll cycle)."""
    rate = obj.rate if obj is not None else objs.Rate.FAST
    if rate is objs.Rate.SLOW:
        return max(cfg.interval, cfg.slow_interval)
    if rate is objs.Rate.MEDIUM:
        return max(cfg.interval, cfg.medium_interval)
    return cfg.interval


#: the age limits built last: (table, configuration, limits), shared by every poller using them
_max_ages_last: tuple[tuple[objs.ObjectDef, ...] | None, PollConfig | None, dict[str, float]] = (
    None, None, {})


class NodePoller:
    """Polls one battery: a task of its port's SDO loop."""

    def __init__(self, node_id: int, port: CanPort, config: Callable[[], PollConfig],
                 on_report: Callable[[NodeReport], None],
                 table: tuple[objs.ObjectDef, ...] = objs.OBJECTS) -> None:
        self.node_id = node_id
        self.port = port
        self._config = config
        self._on_report = on_report
        self._table = table
        self._fast = [o for o in table if o.rate is objs.Rate.FAST]
        self._medium = [o for o in table if o.rate is objs.Rate.MEDIUM]
        self._slow = [o for o in table if o.rate is objs.Rate.SLOW]
        #: the age limits per object and the configuration they were built for
        self._max_ages_for: PollConfig | None = None
        self._max_ages_cache: dict[str, float] = {}
        self._once = [o for o in table if o.rate is objs.Rate.ONCE]
        self._stopped = False
        self._task: TaskHandle | None = None
        self.counters = Counters()
        #: objects that answered "does not exist": key -> (code, firmware it was seen with)
        self._missing: dict[str, tuple[int, tuple[int, ...] | None]] = {}
        self._reset_node_state()
        self._online = False
        self._ever_online = False
        self._failures = 0  #: failed reads in a row
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
        self._stamps: dict[str, float] = {}
        self._backoff: dict[str, tuple[int, float]] = {}  # key -> (failures, next try)
        self._next_slow = 0.0
        #: medium-rate object -> when it is next read (absent: in the next cycle)
        self._next_medium: dict[str, float] = {}

    # -- task --------------------------------------------------------------------------------
    def start(self) -> None:
        self.port.on_heartbeat(self.node_id, self._heartbeat)
        self._task = self.port.sdo.add(self.node_id, self._run())

    def stop(self, join: bool = True) -> None:
        """Stop polling; with ``join``, no report is handed on once this returns."""
        self._stopped = True
        self.port.drop_heartbeat(self.node_id, self._heartbeat)
        self._drop_tpdos()
        if self._task is not None:
            self.port.sdo.remove(self._task, wait=join)

    def wake(self) -> None:
        """Start the next cycle now (a setting changed, the node came back)."""
        if self._task is not None:
            self.port.sdo.wake(self._task)

    def _heartbeat(self, node_id: int, state: int) -> None:
        # Receive thread: a boot-up, or a heartbeat from a node we think is offline, re-probes.
        if state == 0 or not self._online:
            self.wake()

    def _run(self) -> Generator[Any, Any, None]:
        """The poller's task: a cycle, its report, a sleep until the next (woken early)."""
        while not self._stopped:
            started = time.monotonic()
            report = yield from self.safe_steps()
            if self._stopped:
                return
            try:
                self._on_report(report)
            except Exception:  # the next cycle must come whatever the receiver did
                log.exception("node %d: handing on the report failed", self.node_id)
            delay = max(0.0, self._config().interval - (time.monotonic() - started))
            yield delay

    def cycle(self) -> NodeReport:
        """Run one poll cycle in the SDO loop and wait for its report (may raise)."""
        report: NodeReport = self.port.sdo.call(self.node_id, self.steps())
        return report

    def safe_cycle(self) -> NodeReport:
        """:meth:`safe_steps` run in the SDO loop, waited for."""
        report: NodeReport = self.port.sdo.call(self.node_id, self.safe_steps())
        return report

    def safe_steps(self) -> Generator[Upload, Any, NodeReport]:
        """:meth:`steps`, but a cycle that raises takes the node offline (values invalid)
        instead of leaving the last values published as if they were fresh."""
        try:
            return (yield from self.steps())
        except Exception as exc:  # a bug must neither end the task nor pass old data on
            self.counters.cycle_errors += 1
            log.exception("node %d: poll cycle failed; node offline until a cycle succeeds",
                          self.node_id)
            try:
                self._go_offline(f"poll cycle failed: {type(exc).__name__}: {exc}", bus=True)
                return self._report(0.0, state="error")
            except Exception:
                log.exception("node %d: cannot even report", self.node_id)
                return NodeReport(node_id=self.node_id, online=False, state="error",
                                  last_error=f"{type(exc).__name__}: {exc}")

    # -- one cycle ---------------------------------------------------------------------------------
    def steps(self) -> Generator[Upload, Any, NodeReport]:
        """One poll cycle: yields its reads, returns its report."""
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
        # One cheap probe per cycle while offline; a node that answers is identified again
        # (it may be another battery, or have new firmware).
        if not self._online and self._identified:
            probe = yield from self._read(objs.BY_KEY["serial"], cfg)
            if not self._answered(probe):
                self._update_online(cfg)
                return self._report(time.monotonic() - t0)
            if isinstance(probe, int) and probe != self._identity.get("serial"):
                log.warning("node %d: serial changed %s -> %s (another battery)",
                            self.node_id, self._identity.get("serial"), probe)
            self._reset_node_state()
        if not self._identified and not (yield from self._identify(cfg)):
            self._update_online(cfg)
            return self._report(time.monotonic() - t0)
        due = [o for o in self._once if o.key not in self._identity and self._due(o, t0)]
        due += self._fast
        due += [o for o in self._medium if t0 >= self._next_medium.get(o.key, 0.0)]
        if t0 >= self._next_slow:
            due += self._slow
            self._next_slow = t0 + cfg.slow_interval
        tpdo = self._fresh_tpdo(cfg)
        for obj in due:
            if obj.key in tpdo:
                self._values[obj.key], self._stamps[obj.key] = tpdo[obj.key]
                continue
            if not self._wanted(obj):
                continue
            result = yield from self._read_retry(obj, cfg)
            if result is _BUSDOWN or self._failures >= cfg.offline_after:
                break
            self._store(obj, result, t0)
        self._update_online(cfg)
        return self._report(time.monotonic() - t0)

    def _store(self, obj: objs.ObjectDef, result: Any, now: float) -> None:
        if obj.rate is objs.Rate.ONCE:
            if result is None or result is _TIMEOUT or result is _ABORT:
                self._retry_later(obj, now)
            else:  # a new dict: the reports share the identity (it changes only here)
                self._identity = {**self._identity, obj.key: result}
                self._backoff.pop(obj.key, None)
            return
        if result is _TIMEOUT:
            return  # the old value stays until it is too old (see _report)
        self._values[obj.key] = None if result is _ABORT else result
        self._stamps[obj.key] = time.monotonic()
        if obj.rate is objs.Rate.MEDIUM and result is not None and result is not _ABORT:
            # Read again one period later; a failed read is asked again in the next cycle.
            # Half a cycle early, so that a cycle that starts a little before the period is
            # over does not push the read a whole cycle later.
            cfg = self._config()
            self._next_medium[obj.key] = now + max(0.0, cfg.medium_interval - cfg.interval / 2)

    @staticmethod
    def _answered(result: Any) -> bool:
        return result is not _TIMEOUT and result is not _BUSDOWN

    def _wanted(self, obj: objs.ObjectDef) -> bool:
        if obj.key in self._missing:
            return False
        return obj.applies(self._firmware)

    def _due(self, obj: objs.ObjectDef, now: float) -> bool:
        return now >= self._backoff.get(obj.key, (0, 0.0))[1]

    def _retry_later(self, obj: objs.ObjectDef, now: float) -> None:
        fails, _ = self._backoff.get(obj.key, (0, 0.0))
        delay = min(MAX_BACKOFF, self._config().interval * 2 ** fails)
        self._backoff[obj.key] = (fails + 1, now + delay)

    def _identify(self, cfg: PollConfig) -> Generator[Upload, Any, bool]:
        """Read what identifies the node; True once serial, product and firmware are known.

        What was read is kept: a timeout ends this attempt, the next cycle asks only for what is
        still missing (each object with its own back-off), never starting again from nothing.
        """
        self.counters.identify_attempts += 1
        now = time.monotonic()
        for obj in self._once:
            if obj.key in self._identity or not self._wanted(obj) or not self._due(obj, now):
                continue
            result = yield from self._read_retry(obj, cfg)
            if result is _BUSDOWN:
                return False
            self._store(obj, result, now)
            if result is _TIMEOUT and self._failures >= cfg.offline_after:
                break  # nobody answering: do not spend the cycle on the rest
        missing = [k for k in REQUIRED_IDENTITY if self._identity.get(k) is None]
        if missing == ["revision"] and self._identity.get("software_version"):
            missing = []  # 100A names the firmware when 1018:03 is not there
        if missing:
            self._last_error = f"identity incomplete: {', '.join(missing)} not read yet"
            return False
        self._firmware = objs.parse_firmware(self._identity.get("software_version"),
                                             self._identity.get("revision"))
        self._forget_missing_of_other_firmware()
        vendor = self._identity.get("vendor")
        if vendor is not None and vendor != objs.SUPERB_VENDOR_ID:
            log.warning("node %d: vendor 0x%X is not SuperB (0x%X); reading it anyway",
                        self.node_id, vendor, objs.SUPERB_VENDOR_ID)
        yield from self._read_tpdo_config(cfg)
        self._identified = True
        self._next_slow = 0.0
        self._next_medium = {}
        log.info("node %d: serial %s, firmware %s, %s", self.node_id,
                 self._identity.get("serial"), objs.format_firmware(self._firmware),
                 self._identity.get("device_name") or "unnamed")
        return True

    def _forget_missing_of_other_firmware(self) -> None:
        fw = self._firmware
        for key, (code, seen_fw) in list(self._missing.items()):
            if seen_fw is None:
                self._missing[key] = (code, fw)
            elif seen_fw != fw:
                log.info("node %d: firmware %s (was %s): asking for %s again", self.node_id,
                         objs.format_firmware(fw), objs.format_firmware(seen_fw), key)
                del self._missing[key]

    # -- reading -----------------------------------------------------------------------------------
    def _read_retry(self, obj: objs.ObjectDef, cfg: PollConfig) -> Generator[Upload, Any, Any]:
        """:meth:`_read`, asked once more at once when it failed (timeout, bad answer)."""
        result = yield from self._read(obj, cfg)
        if (result is _TIMEOUT or result is None) and self._failures < cfg.offline_after:
            self.counters.retries += 1
            result = yield from self._read(obj, cfg)
        return result

    def _failed(self, why: str) -> None:
        self.counters.failed_reads += 1
        self._failures += 1
        self._last_error = why

    def _read(self, obj: objs.ObjectDef, cfg: PollConfig) -> Generator[Upload, Any, Any]:
        """Read one object. Returns its value, None (unusable answer), or a marker."""
        try:
            data, sized = yield Upload(obj.index, obj.subindex, cfg.sdo_timeout)
        except SdoTimeout:
            self.counters.sdo_timeouts += 1
            self._failed(f"{obj.label} {obj.key}: no answer")
            return _TIMEOUT
        except SdoAbort as exc:
            self.counters.sdo_aborts += 1
            self._failures = 0
            self._last_ok = time.monotonic()
            self._aborted[obj.key] = exc.code
            name = objs.ABORT_NAMES.get(exc.code, "unknown code")
            if exc.code in objs.ABORT_MISSING:
                if obj.key not in self._missing:
                    log.info("node %d: %s %s answered SDO abort 0x%08X (%s); not asking again "
                             "for this firmware", self.node_id, obj.label, obj.key, exc.code,
                             name)
                self._missing[obj.key] = (exc.code, self._firmware)
            else:
                self.counters.transient_aborts += 1
                self._last_error = f"{obj.label} {obj.key}: SDO abort 0x{exc.code:08X} ({name})"
            return _ABORT
        except BadResponse as exc:
            self.counters.bad_responses += 1
            self._failed(f"{obj.label} {obj.key}: {exc}")
            log.warning("node %d: %s", self.node_id, self._last_error)
            return None
        except BusDown as exc:
            # A frame that cannot be sent (bus-off, ENOBUFS) is a failed transaction too:
            # keep publishing old values and the node would look healthy forever.
            self.counters.bus_errors += 1
            self._failed(str(exc))
            log.warning("node %d: %s", self.node_id, exc)
            return _BUSDOWN
        except Exception as exc:  # whatever else: a failed read, never an unguarded one
            self.counters.bad_responses += 1
            self._failed(f"{obj.label} {obj.key}: {type(exc).__name__}: {exc}")
            log.exception("node %d: reading %s failed", self.node_id, obj.label)
            return None
        self.counters.sdo_ok += 1
        self._failures = 0
        self._last_ok = time.monotonic()
        self._aborted.pop(obj.key, None)
        try:
            return objs.decode(obj, data, sized)
        except objs.DecodeError as exc:
            self.counters.bad_responses += 1
            self.counters.failed_reads += 1
            self._last_error = str(exc)
            log.warning("node %d: %s", self.node_id, exc)
            return None

    def _read_raw_u32(self, index: int, sub: int,
                      cfg: PollConfig) -> Generator[Upload, Any, int | None]:
        try:
            data, sized = yield Upload(index, sub, cfg.sdo_timeout)
        except (SdoAbort, SdoTimeout, BadResponse, BusDown):
            return None
        self.counters.sdo_ok += 1
        if not sized:
            data = data[:4]
        return int.from_bytes(data[:4], "little") if 1 <= len(data) <= 4 else None

    # -- TPDOs -------------------------------------------------------------------------------------
    def _read_tpdo_config(self, cfg: PollConfig) -> Generator[Upload, Any, None]:
        """Read 1800-1803 / 1A00-1A03 (SDO uploads only) and listen to TPDOs of known objects."""
        self._drop_tpdos()
        maps: list[_TpdoMap] = []
        for comm, mapping in zip(objs.TPDO_COMM, objs.TPDO_MAP, strict=True):
            cob = yield from self._read_raw_u32(comm, 1, cfg)
            if cob is None:
                break
            if cob & 0x80000000 or cob & 0x1FFFF800:
                continue  # PDO not valid, or a 29-bit id
            count = yield from self._read_raw_u32(mapping, 0, cfg)
            if not count:
                continue
            entries: list[tuple[objs.ObjectDef | None, int, int]] = []
            offset = 0
            for sub in range(1, min(count, 8) + 1):
                raw = yield from self._read_raw_u32(mapping, sub, cfg)
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
                if obj is None:
                    continue
                try:  # a TPDO too short or not decodable makes the value invalid, not old
                    if offset + length > len(data):
                        raise objs.DecodeError(f"TPDO 0x{can_id:03X}: {len(data)} bytes")
                    got[obj.key] = (objs.decode(obj, bytes(data[offset:offset + length])), now)
                except Exception:  # noqa: BLE001 - whatever it is, the value is invalid
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

    def _fresh_tpdo(self, cfg: PollConfig) -> dict[str, tuple[Any, float]]:
        """TPDO values received recently: key -> (value, monotonic time received)."""
        limit = 2 * cfg.interval + 0.5
        now = time.monotonic()
        with self._tpdo_lock:
            return {k: vt for k, vt in self._tpdo_values.items() if now - vt[1] <= limit}

    # -- online state ------------------------------------------------------------------------------
    def _update_online(self, cfg: PollConfig) -> None:
        now = time.monotonic()
        seen = self.port.seen(self.node_id)
        hb_age = None if seen.heartbeat_time is None else now - seen.heartbeat_time
        answered_recently = self._last_ok > 0 and now - self._last_ok <= cfg.heartbeat_timeout
        silent = (hb_age is None or hb_age > cfg.heartbeat_timeout) and not answered_recently
        online = self._identified and self._failures < cfg.offline_after and not silent
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
        self._stamps = {}
        if bus:
            self._last_error = why

    def _max_ages(self, cfg: PollConfig) -> dict[str, float]:
        """Every object's age limit (its poll period + ``max_age``) under ``cfg``; one dict per
        configuration and table, shared by the pollers and their reports (which never change
        it)."""
        global _max_ages_last
        if self._max_ages_for is not cfg:
            table, last_cfg, ages = _max_ages_last
            if table is not self._table or last_cfg != cfg:
                ages = {o.key: poll_period(o, cfg) + cfg.max_age for o in self._table}
                _max_ages_last = (self._table, cfg, ages)
            self._max_ages_cache = ages
            self._max_ages_for = cfg
        return self._max_ages_cache

    def _report(self, took: float, state: str | None = None) -> NodeReport:
        self._seq += 1
        seen = self.port.seen(self.node_id)
        hb_age = None if seen.heartbeat_time is None else time.monotonic() - seen.heartbeat_time
        if state is None:
            state = "online" if self._online else ("offline" if self._ever_online or
                                                    self._identified else "starting")
        if not self._online:
            self._values = {}
        cfg = self._config()
        now = time.monotonic()
        values: dict[str, Any] = {}
        max_ages = self._max_ages(cfg)
        default_limit = cfg.interval + cfg.max_age
        stamps = self._stamps
        for key, value in self._values.items():
            age = now - stamps.get(key, -math.inf)
            values[key] = value if age <= max_ages.get(key, default_limit) else None
        return NodeReport(
            node_id=self.node_id, online=self._online,
            serial=self._identity.get("serial"),
            firmware=objs.format_firmware(self._firmware),
            identity=self._identity, values=values,
            aborted=dict(self._aborted) if self._aborted else {},
            missing={k: code for k, (code, _) in self._missing.items()} if self._missing else {},
            stamps={k: stamps[k] for k in values if k in stamps},
            max_ages=max_ages,
            sdo=self.port.sdo_diag(self.node_id).snapshot(),
            tpdo_keys=tuple(sorted(self._fresh_tpdo(cfg))),
            heartbeat_age=hb_age, heartbeat_state=seen.heartbeat_state, frames=seen.frames,
            counters=replace(self.counters), last_error=self._last_error, cycle_time=took,
            seq=self._seq, state=state, taken=now)


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TIMEOUT = _Marker("timeout")
_ABORT = _Marker("abort")
_BUSDOWN = _Marker("bus-down")
