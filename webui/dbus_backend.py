"""The web page's D-Bus side: one thread, one private connection, one GLib main loop.

Waitress serves requests from a pool of worker threads; dbus-python is not to be driven from
many threads into a main loop nobody runs. So :class:`DbusBackend` owns a private
``dbus.bus.BusConnection`` and runs a ``GLib.MainLoop`` in a thread of its own. Everything that
touches D-Bus happens on that thread:

* request threads *read* from caches kept here (copied under a lock) and never wait on D-Bus;
* request threads *write* by handing a call to the loop thread (``GLib.idle_add`` is
  thread-safe) and waiting on a :class:`concurrent.futures.Future` with a timeout; the call
  itself is asynchronous (``call_async``), so the loop never blocks either.

The caches:

* every setting of the schema (plus ``/Settings/System/SecurityProfile``), read with
  ``GetValue`` when the settings service appears and kept current from its
  ``PropertiesChanged`` signals. When the settings service appears the backend first registers
  every schema setting (``AddSettings`` with the schema's typed default; re-adding keeps the
  stored value), so every page works before the drivers have started;
* every ``com.victronenergy.battery.*``, ``com.victronenergy.vebus.*`` and
  ``com.victronenergy.canbridge.*`` service: scanned with ``GetItems`` when its name appears
  (``NameOwnerChanged``) and kept current from ``ItemsChanged`` and ``PropertiesChanged``
  (matched on that service's unique name only), with the time each path last changed;
* an hour of SoC, voltage and current per battery and vebus service, sampled on a timer.

This is the only module of the web page that imports dbus-python or GLib.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import dbus
import dbus.bus
import dbus.mainloop.glib
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from driver.schema import Schema, Setting
from driver.venus import busclient

log = logging.getLogger("canbridge.web.dbus")

SETTINGS_SERVICE = "com.victronenergy.settings"
BUSITEM = "com.victronenergy.BusItem"
SETTINGS_IFACE = "com.victronenergy.Settings"
SECURITY_PROFILE = "/Settings/System/SecurityProfile"
WATCHED_PREFIXES = (
    "com.victronenergy.battery.",
    "com.victronenergy.vebus.",
    "com.victronenergy.canbridge.",
)
#: series kept per battery / vebus service for the status charts
HISTORY_PATHS = {"soc": "/Soc", "voltage": "/Dc/0/Voltage", "current": "/Dc/0/Current"}


class BackendUnavailable(Exception):
    """The settings service (or the bus) cannot be reached; nothing was written."""


class BackendTimeout(BackendUnavailable):
    """A D-Bus call did not answer in time; it may or may not have been carried out."""


#: received D-Bus value -> plain Python (invalid -> None), and a value typed for a setting:
#: the one implementation in driver/venus/busclient.py, shared with canbridge-config
unwrap = busclient.plain
wrap_typed = busclient.typed_variant


def wrap_plain(value: Any) -> Any:
    """A Python value for ``SetValue`` on a driver's path (velib's conventions)."""
    if value is None:
        return dbus.Array([], signature=dbus.Signature("i"), variant_level=1)
    if isinstance(value, bool):
        return dbus.Int32(int(value), variant_level=1)
    if isinstance(value, int):
        return dbus.Int32(value, variant_level=1)
    if isinstance(value, float):
        return dbus.Double(value, variant_level=1)
    return dbus.String(str(value), variant_level=1)


@dataclass
class ServiceState:
    """What is known about one watched service."""

    name: str
    owner: str
    values: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    updated: dict[str, float] = field(default_factory=dict)
    scanned: bool = False
    appeared: float = 0.0
    #: when anything of this service was last received (a value published, changed or not)
    last_signal: float = 0.0
    #: node -> (read counters, when they last moved, serial): from a driver's /Status/Nodes
    node_reads: dict[str, tuple[Any, float, str]] = field(default_factory=dict)
    matches: list[Any] = field(default_factory=list)
    history: deque[tuple[float, Any, Any, Any]] = field(default_factory=lambda: deque(maxlen=720))

    @property
    def service_class(self) -> str:
        return self.name.split(".")[2] if self.name.count(".") >= 3 else ""


@dataclass
class Counters:
    """The backend's own diagnostics."""

    signals: int = 0
    calls: int = 0
    call_errors: int = 0
    timeouts: int = 0
    settings_appeared: int = 0
    last_error: str = ""


ChangeListener = Callable[[str, Any], None]


class DbusBackend:
    """The web page's view of D-Bus (see the module docstring).

    ``address`` is a D-Bus address; None means ``$DBUS_SESSION_BUS_ADDRESS`` if set (off the
    GX), else the system bus. ``history_interval`` seconds between chart samples, ``history_len``
    samples kept (the default keeps one hour).
    """

    def __init__(self, schema: Schema, address: str | None = None, *,
                 call_timeout: float = 5.0, history_interval: float = 5.0,
                 history_len: int = 720, register_settings: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.schema = schema
        self.address = address if address is not None else os.environ.get(
            "DBUS_SESSION_BUS_ADDRESS")
        self.call_timeout = call_timeout
        self.history_interval = history_interval
        self.history_len = history_len
        self.register_settings = register_settings
        self.clock = clock
        self.counters = Counters()
        self._lock = threading.Lock()
        self._settings: dict[str, Any] = {}
        self._settings_present = False
        self._settings_loaded = False
        self._settings_version = 0
        self._add_errors: dict[str, int] = {}
        self._services: dict[str, ServiceState] = {}
        self._listeners: list[ChangeListener] = []
        self._thread: threading.Thread | None = None
        self._loop: GLib.MainLoop | None = None
        self._bus: dbus.bus.BusConnection | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._wanted = {s.path: s for s in schema}
        self._local_refusals: dict[str, dict[str, Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect and start the loop thread; returns once the connection is up."""
        self._thread = threading.Thread(target=self._run, name="dbus-backend", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BackendUnavailable("the D-Bus thread did not start")
        if self._start_error is not None:
            raise BackendUnavailable(f"cannot connect to D-Bus: {self._start_error}")

    def stop(self) -> None:
        """Stop the loop thread and close the connection."""
        loop = self._loop
        if loop is not None:
            GLib.idle_add(self._shutdown)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _shutdown(self) -> bool:
        for svc in list(self._services.values()):
            self._drop_matches(svc)
        if self._bus is not None:
            try:
                self._bus.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead connection is harmless
                log.debug("closing the bus: %s", exc)
        if self._loop is not None:
            self._loop.quit()
        return False

    def _run(self) -> None:
        try:
            # libdbus is only thread-safe once its locks are initialised: this thread dispatches
            # while request threads (and, in tests, other code) may hold connections too.
            dbus.mainloop.glib.threads_init()
            mainloop = DBusGMainLoop(set_as_default=False)
            if self.address:
                self._bus = dbus.bus.BusConnection(self.address, mainloop=mainloop)
            else:
                self._bus = dbus.bus.BusConnection(dbus.bus.BUS_SYSTEM, mainloop=mainloop)
            self._loop = GLib.MainLoop()
            self._subscribe()
        except Exception as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._ready.set()
            return
        GLib.idle_add(self._started)
        self._loop.run()
        log.debug("D-Bus thread stopped")

    def _started(self) -> bool:
        self._ready.set()
        return False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add_listener(self, fn: ChangeListener) -> None:
        """Call ``fn(path, value)`` (on the D-Bus thread) for every settings change seen."""
        self._listeners.append(fn)

    # -- subscriptions (loop thread) ----------------------------------------------------------
    def _subscribe(self) -> None:
        bus = self._bus
        assert bus is not None
        bus.add_signal_receiver(self._on_setting_signal, signal_name="PropertiesChanged",
                                dbus_interface=BUSITEM, bus_name=SETTINGS_SERVICE,
                                path_keyword="path")
        bus.add_signal_receiver(self._on_name_owner_changed, signal_name="NameOwnerChanged",
                                dbus_interface="org.freedesktop.DBus",
                                bus_name="org.freedesktop.DBus",
                                path="/org/freedesktop/DBus")
        bus.call_async("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                       "ListNames", "", [], reply_handler=self._on_names,
                       error_handler=self._log_error("ListNames"))
        GLib.timeout_add(int(self.history_interval * 1000), self._sample_history)

    def _log_error(self, what: str) -> Callable[[Exception], None]:
        def handler(exc: Exception) -> None:
            self.counters.call_errors += 1
            self.counters.last_error = f"{what}: {exc}"
            log.warning("%s failed: %s", what, exc)
        return handler

    def _on_names(self, names: list[str]) -> None:
        for raw in names:
            name = str(raw)
            if name == SETTINGS_SERVICE:
                self._settings_appeared()
            elif name.startswith(WATCHED_PREFIXES):
                self._get_owner_and_add(name)

    def _get_owner_and_add(self, name: str) -> None:
        assert self._bus is not None
        self._bus.call_async("org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "GetNameOwner", "s", [name],
                             reply_handler=lambda owner: self._add_service(name, str(owner)),
                             error_handler=self._log_error(f"GetNameOwner {name}"))

    def _on_name_owner_changed(self, name: str, old: str, new: str) -> None:
        name = str(name)
        if name == SETTINGS_SERVICE:
            if old:
                self._settings_gone()
            if new:
                self._settings_appeared()
        elif name.startswith(WATCHED_PREFIXES):
            if old:
                self._remove_service(name)
            if new:
                self._add_service(name, str(new))

    # -- settings (loop thread) ----------------------------------------------------------------
    def _settings_gone(self) -> None:
        log.warning("%s left D-Bus; writes answer 503 until it returns", SETTINGS_SERVICE)
        with self._lock:
            self._settings_present = False
            self._settings_loaded = False
            self._settings_version += 1

    def _settings_appeared(self) -> None:
        self.counters.settings_appeared += 1
        with self._lock:
            self._settings_present = True
        if self.register_settings:
            self._add_settings()
        else:
            self._load_settings()

    def _add_settings(self) -> None:
        assert self._bus is not None
        entries = []
        for s in self.schema:
            entry = {"path": dbus.String(s.path), "default": wrap_typed(s.type, s.default)}
            if s.type != "s":
                entry["min"] = wrap_typed(s.type, s.dbus_min())
                entry["max"] = wrap_typed(s.type, s.dbus_max())
            if s.silent:
                entry["silent"] = dbus.Int32(1, variant_level=1)
            entries.append(dbus.Dictionary(entry, signature="sv"))

        def done(results: Any) -> None:
            errors = {}
            for r in results:
                err = int(r.get("error", 0))
                if err != 0:
                    errors[str(r.get("path"))] = err
                    log.error("registering %s: the settings service answered %d",
                              r.get("path"), err)
            with self._lock:
                self._add_errors = errors
            self._load_settings()

        def failed(exc: Exception) -> None:
            self._log_error("AddSettings")(exc)
            self._load_settings()

        self._bus.call_async(SETTINGS_SERVICE, "/", SETTINGS_IFACE, "AddSettings", "aa{sv}",
                             [dbus.Array(entries, signature="a{sv}")], reply_handler=done,
                             error_handler=failed, timeout=self.call_timeout)

    def _load_settings(self) -> None:
        assert self._bus is not None
        paths = [*self._wanted, SECURITY_PROFILE]
        pending = {"n": len(paths)}
        got: dict[str, Any] = {}

        def one_done() -> None:
            pending["n"] -= 1
            if pending["n"] == 0:
                with self._lock:
                    for p, v in got.items():
                        self._settings[p] = v
                    for p in paths:
                        if p not in got:
                            self._settings.pop(p, None)
                    self._settings_loaded = self._settings_present
                    self._settings_version += 1
                log.info("read %d settings from %s", len(got), SETTINGS_SERVICE)

        for path in paths:
            def reply(value: Any, path: str = path) -> None:
                got[path] = unwrap(value)
                one_done()

            def error(exc: Exception, path: str = path) -> None:
                if path != SECURITY_PROFILE:
                    self._log_error(f"GetValue {path}")(exc)
                one_done()

            self._bus.call_async(SETTINGS_SERVICE, path, BUSITEM, "GetValue", "", [],
                                 reply_handler=reply, error_handler=error,
                                 timeout=self.call_timeout)

    def _on_setting_signal(self, changes: Any, path: str | None = None) -> None:
        self.counters.signals += 1
        if path is None or (path not in self._wanted and path != SECURITY_PROFILE):
            return
        if "Value" not in changes:
            return
        self._setting_value(str(path), unwrap(changes["Value"]))

    def _setting_value(self, path: str, value: Any) -> bool:
        """A setting's new value (signal, or our own write): cache it, tell the listeners."""
        with self._lock:
            if type(self._settings.get(path)) is type(value) and self._settings.get(
                    path) == value:
                return False
            self._settings[path] = value
            self._settings_version += 1
        for fn in self._listeners:
            try:
                fn(str(path), value)
            except Exception:
                log.exception("settings listener failed")
        return False

    # -- watched services (loop thread) -------------------------------------------------------
    def _add_service(self, name: str, owner: str) -> None:
        assert self._bus is not None
        with self._lock:
            old = self._services.get(name)
        if old is not None:
            if old.owner == owner:
                return
            self._remove_service(name)
        svc = ServiceState(name=name, owner=owner, appeared=self.clock(),
                           history=deque(maxlen=self.history_len))
        svc.matches.append(self._bus.add_signal_receiver(
            lambda items, svc=svc: self._on_items_changed(svc, items),
            signal_name="ItemsChanged", dbus_interface=BUSITEM, bus_name=owner, path="/"))
        svc.matches.append(self._bus.add_signal_receiver(
            lambda changes, path=None, svc=svc: self._on_properties_changed(svc, path, changes),
            signal_name="PropertiesChanged", dbus_interface=BUSITEM, bus_name=owner,
            path_keyword="path"))
        with self._lock:
            self._services[name] = svc
        log.info("watching %s", name)

        def got_items(items: Any) -> None:
            self._store(svc, {str(p): (unwrap(d.get("Value")), d.get("Text"))
                              for p, d in items.items()})
            svc.scanned = True

        def no_items(exc: Exception) -> None:
            # Services older than GetItems: the root's GetValue gives the whole tree.
            self._bus.call_async(name, "/", BUSITEM, "GetValue", "", [],  # type: ignore[union-attr]
                                 reply_handler=got_tree,
                                 error_handler=self._log_error(f"GetValue / of {name}"),
                                 timeout=self.call_timeout)

        def got_tree(tree: Any) -> None:
            self._store(svc, {"/" + str(p).lstrip("/"): (unwrap(v), None)
                              for p, v in tree.items()})
            svc.scanned = True

        self._bus.call_async(name, "/", BUSITEM, "GetItems", "", [], reply_handler=got_items,
                             error_handler=no_items, timeout=self.call_timeout)

    def _remove_service(self, name: str) -> None:
        with self._lock:
            svc = self._services.pop(name, None)
        if svc is not None:
            self._drop_matches(svc)
            log.info("%s left D-Bus", name)

    @staticmethod
    def _drop_matches(svc: ServiceState) -> None:
        for m in svc.matches:
            try:
                m.remove()
            except Exception as exc:  # noqa: BLE001 - the connection may be gone already
                log.debug("removing a match: %s", exc)
        svc.matches.clear()

    def _store(self, svc: ServiceState, items: dict[str, tuple[Any, Any]]) -> None:
        now = self.clock()
        with self._lock:
            svc.last_signal = now
            if "/Status/Nodes" in items:
                self._note_node_reads(svc, items["/Status/Nodes"][0], now)
            for path, (value, text) in items.items():
                if svc.values.get(path, object()) != value or path not in svc.updated:
                    svc.updated[path] = now
                svc.values[path] = value
                svc.texts[path] = (str(text) if text is not None
                                   else ("---" if value is None else str(value)))

    @staticmethod
    def _note_node_reads(svc: ServiceState, raw: Any, now: float) -> None:
        """When dbus-superb last *read* each battery: its per-node counters of successful
        SDO reads and received PDOs (``/Status/Nodes``, docs/superb.md) moved then. A value
        that did not change was still read; the time since the value changed says nothing."""
        try:
            nodes = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            nodes = None
        if not isinstance(nodes, dict):
            return
        reads: dict[str, tuple[Any, float, str]] = {}  # nodes no longer configured drop out
        for node, info in nodes.items():
            if not isinstance(info, dict):
                continue
            counters = (info.get("sdo_ok"), info.get("tpdo_frames"))
            if counters == (None, None):
                continue
            old = svc.node_reads.get(str(node))
            moved = old is None or old[0] != counters
            reads[str(node)] = (counters, now if moved else old[1],  # type: ignore[index]
                                str(info.get("serial") or ""))
        svc.node_reads = reads

    def _on_items_changed(self, svc: ServiceState, items: Any) -> None:
        self.counters.signals += 1
        self._store(svc, {str(p): (unwrap(d.get("Value")), d.get("Text"))
                          for p, d in items.items() if "Value" in d})

    def _on_properties_changed(self, svc: ServiceState, path: str | None, changes: Any) -> None:
        self.counters.signals += 1
        if path is None or "Value" not in changes:
            return
        self._store(svc, {str(path): (unwrap(changes["Value"]), changes.get("Text"))})

    def _sample_history(self) -> bool:
        now = self.clock()
        with self._lock:
            for svc in self._services.values():
                if svc.scanned and svc.service_class in ("battery", "vebus"):
                    soc, volt, cur = (svc.values.get(p) for p in HISTORY_PATHS.values())
                    svc.history.append((now, soc, volt, cur))
        return True

    # -- calls from request threads -------------------------------------------------------------
    def _submit(self, fn: Callable[[Future[Any]], None], timeout: float | None = None) -> Any:
        """Run ``fn(future)`` on the loop thread; wait for the future's result."""
        if not self.running:
            raise BackendUnavailable("the D-Bus connection is not running")
        fut: Future[Any] = Future()

        def run() -> bool:
            if fut.set_running_or_notify_cancel():
                try:
                    fn(fut)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    fut.set_exception(exc)
            return False

        self.counters.calls += 1
        GLib.idle_add(run)
        wait = (timeout if timeout is not None else self.call_timeout) + 1.0
        try:
            return fut.result(wait)
        except FutureTimeout:
            fut.cancel()
            self.counters.timeouts += 1
            raise BackendTimeout("D-Bus did not answer in time") from None

    def _call(self, service: str, path: str, iface: str, method: str, *,
              signature: str, args: list[Any]) -> Any:
        def go(fut: Future[Any]) -> None:
            assert self._bus is not None

            def ok(*result: Any) -> None:
                if not fut.done():
                    fut.set_result(result[0] if len(result) == 1 else result)

            def err(exc: Exception) -> None:
                self.counters.call_errors += 1
                self.counters.last_error = f"{method} {path}: {exc}"
                if not fut.done():
                    fut.set_exception(exc)

            self._bus.call_async(service, path, iface, method, signature, args,
                                 reply_handler=ok, error_handler=err, timeout=self.call_timeout)
        return self._submit(go)

    def set_setting(self, setting: Setting, value: Any) -> int:
        """Write one setting through the settings service; its answer (0 ok, -1 refused).

        Raises :class:`BackendUnavailable` when the settings service is not there (nothing is
        written) and :class:`BackendTimeout` when it does not answer.
        """
        if not self.settings_available():
            raise BackendUnavailable(f"{SETTINGS_SERVICE} is not running")
        try:
            answer = self._call(SETTINGS_SERVICE, setting.path, BUSITEM, "SetValue",
                                signature="v", args=[wrap_typed(setting.type, value)])
        except dbus.exceptions.DBusException as exc:
            name = exc.get_dbus_name() or ""
            if name.startswith("org.freedesktop.DBus.Error."):
                raise BackendUnavailable(
                    f"{SETTINGS_SERVICE} did not take the value: {exc.get_dbus_message()}"
                ) from None
            return -1
        if int(answer) == 0:
            # Write-through: the next request (and the page shown after this one) sees the
            # value now, not when the signal arrives; same path as the signal (on the loop).
            GLib.idle_add(self._setting_value, setting.path, setting.typed(value))
        return int(answer)

    def read_settings(self, paths: Iterable[str]) -> dict[str, Any]:
        """The values of ``paths`` read now from the settings service (``GetValue``), not
        from the cache; a path it does not know is left out. Raises BackendUnavailable."""
        wanted = [p for p in paths if p in self._wanted]
        if not wanted:
            return {}

        def go(fut: Future[Any]) -> None:
            assert self._bus is not None
            got: dict[str, Any] = {}
            pending = {"n": len(wanted)}

            def one(path: str, value: Any = None, ok: bool = False) -> None:
                if ok:
                    got[path] = unwrap(value)
                pending["n"] -= 1
                if pending["n"] == 0 and not fut.done():
                    fut.set_result(got)

            for path in wanted:
                self._bus.call_async(
                    SETTINGS_SERVICE, path, BUSITEM, "GetValue", "", [],
                    reply_handler=lambda v, path=path: one(path, v, True),
                    error_handler=lambda _e, path=path: one(path),
                    timeout=self.call_timeout)
        result: dict[str, Any] = self._submit(go)
        return result

    def set_service_value(self, service: str, path: str, value: Any) -> int:
        """``SetValue`` on a driver's path (0 ok, 1 not writeable, 2 refused)."""
        with self._lock:
            if service not in self._services:
                raise BackendUnavailable(f"{service} is not running")
        try:
            return int(self._call(service, path, BUSITEM, "SetValue", signature="v",
                                  args=[wrap_plain(value)]))
        except dbus.exceptions.DBusException as exc:
            raise BackendUnavailable(f"{service}: {exc.get_dbus_message()}") from None

    # -- cached reads (any thread) --------------------------------------------------------------
    def settings_available(self) -> bool:
        """True when the settings service is present and its values have been read."""
        with self._lock:
            return self._settings_present and self._settings_loaded

    def settings_version(self) -> int:
        with self._lock:
            return self._settings_version

    def settings(self) -> dict[str, Any]:
        """The last known value of every schema setting (by path); may be stale when down."""
        with self._lock:
            return {p: v for p, v in self._settings.items() if p in self._wanted}

    def setting(self, path: str) -> Any:
        with self._lock:
            return self._settings.get(path)

    def registration_errors(self) -> dict[str, int]:
        """Settings the settings service refused to register (path -> its error code)."""
        with self._lock:
            return dict(self._add_errors)

    def security_profile(self) -> int | None:
        """``/Settings/System/SecurityProfile`` (0 secure ... 3 not chosen), None if unknown."""
        with self._lock:
            value = self._settings.get(SECURITY_PROFILE)
        return value if isinstance(value, int) else None

    def services(self, service_class: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of the watched services (optionally of one class), sorted by name."""
        now = self.clock()
        out = []
        with self._lock:
            for svc in sorted(self._services.values(), key=lambda s: s.name):
                if service_class is not None and svc.service_class != service_class:
                    continue
                out.append({
                    "service": svc.name,
                    "class": svc.service_class,
                    "scanned": svc.scanned,
                    "values": dict(svc.values),
                    "texts": dict(svc.texts),
                    "ages": {p: round(now - t, 1) for p, t in svc.updated.items()},
                    "signal_age": round(now - svc.last_signal, 1) if svc.last_signal else None,
                    "node_reads": {n: {"age": round(now - t, 1), "serial": serial}
                                   for n, (_, t, serial) in svc.node_reads.items()},
                })
        return out

    def history(self, since: float | None = None) -> dict[str, dict[str, list[Any]]]:
        """Per service: ``t`` (seconds, epoch) and one list per series in HISTORY_PATHS;
        only the samples taken after ``since`` when given (the page asks for what is new)."""
        out: dict[str, dict[str, list[Any]]] = {}
        with self._lock:
            for svc in self._services.values():
                samples = [h for h in svc.history if since is None or round(h[0], 1) > since]
                if not samples:
                    continue
                cols = list(zip(*samples, strict=True))
                series = {"t": [round(t, 1) for t in cols[0]]}
                for i, key in enumerate(HISTORY_PATHS, start=1):
                    series[key] = list(cols[i])
                out[svc.name] = series
        return out

    def note_refusal(self, key: str, value: Any, in_force: Any, rule: str) -> None:
        """Record a setting this process refused itself (the web server's own address and
        port), shown with the drivers' refusals."""
        with self._lock:
            self._local_refusals[key] = {"setting": key, "value": value, "in_force": in_force,
                                         "rule": rule, "time": round(self.clock(), 1),
                                         "service": "canbridge-web"}

    def local_refusals(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._local_refusals.values()]

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"signals": c.signals, "calls": c.calls, "call_errors": c.call_errors,
                "timeouts": c.timeouts, "settings_service_appeared": c.settings_appeared,
                "last_error": c.last_error, "settings_available": self.settings_available(),
                "registration_errors": self.registration_errors()}
