"""Live Venus settings for the drivers, from the schema.

:class:`LiveSettings` registers a set of schema settings with ``com.victronenergy.settings``
(through velib's ``SettingsDevice``, i.e. ``AddSettings``) with explicit types taken from the
schema, keeps a validated copy of every value, and calls back on every change so it applies at
once. It also:

* waits for the settings service at start (one clear log line, no crash loop), and registers
  again when the settings service restarts, reporting values that changed meanwhile;
* keeps the last good value when a change breaks the schema (range, node-ID syntax, a
  cross-field rule such as float <= absorption), records why in :attr:`rejected`, **writes the
  value in force back to the settings service** (so every page shows what applies, not what
  was refused) and records the refusal in :attr:`refusals`, which it publishes on the
  process's D-Bus services (:meth:`publish_on`; docs/web.md "Refused values");
* remembers the last good value of every setting in a small JSON file (``state_file``), so a
  value refused at start falls back to the value that was in force before, not blindly to the
  schema default;
* registers per-device records (``/Settings/Devices/<uid>/ClassAndVrmInstance`` and
  ``CustomName``) on request and returns the device instance the settings service allocated.

Everything runs on the GLib main loop thread.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dbus

from driver.logsetup import set_level_from_setting
from driver.schema import Schema, Setting, SettingValue, SettingValueError
from driver.venus.dbusconn import assert_main_thread, watch_name
from driver.venus.service import register_settings_publisher
from driver.venus.velib import Velib

log = logging.getLogger("canbridge.settings")

SETTINGS_SERVICE = "com.victronenergy.settings"
LOG_LEVEL_PATH = "/Settings/CanBridge/General/LogLevel"
BUSITEM = "com.victronenergy.BusItem"
#: where the last good values are kept on a GX (survives firmware updates, like /data/conf)
GX_STATE_DIR = Path("/data/conf/canbridge")
GX_VERSION_FILE = Path("/opt/victronenergy/version")
#: paths a driver publishes its refusals on (see :meth:`LiveSettings.publish_on`)
REFUSALS_PATH = "/CanBridge/Refusals"
LAST_REFUSAL_PATH = "/CanBridge/LastRefusal"
REFUSAL_COUNT_PATH = "/CanBridge/RefusalCount"
#: a write-back that keeps coming back (another writer fighting us) stops after this many
#: write-backs of one setting within WRITE_BACK_WINDOW seconds
WRITE_BACK_LIMIT = 5
WRITE_BACK_WINDOW = 10.0

ChangeCallback = Callable[[str, Any, Any], None]


@dataclass
class _Extra:
    default: SettingValue
    min: SettingValue
    max: SettingValue
    callback: ChangeCallback | None


def default_state_file(settings: Iterable[Setting]) -> Path | None:
    """Where a process keeps the last good values of ``settings``.

    ``$CANBRIDGE_STATE_DIR`` if set; on a GX ``/data/conf/canbridge``; elsewhere None (kept in
    memory only: a development machine's ``/data`` is nobody's business). The file is named
    after the settings' groups (``lastgood-Superb.json``), so each driver has its own.
    """
    env = os.environ.get("CANBRIDGE_STATE_DIR")
    if env:
        base = Path(env)
    elif GX_VERSION_FILE.is_file():
        base = GX_STATE_DIR
    else:
        return None
    parts = sorted({s.path.split("/")[3] for s in settings if s.path.count("/") >= 4}
                   - {"General"}) or ["General"]
    return base / f"lastgood-{'-'.join(parts)}.json"


def _plain(value: Any) -> Any:
    """A D-Bus or Python value as JSON-able plain Python (for the published refusals)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def parse_class_instance(value: Any) -> tuple[str, int] | None:
    """``"battery:512"`` -> ("battery", 512); None when malformed."""
    if not isinstance(value, str) or ":" not in value:
        return None
    cls, _, inst = value.partition(":")
    try:
        return cls, int(inst)
    except ValueError:
        return None


class LiveSettings:
    """A validated, live view of some of the schema's settings.

    ``on_change(path, old, new)`` is called on the main loop for every accepted change after
    ``on_ready()`` has been called once (when the settings are first registered).
    """

    def __init__(self, velib: Velib, bus: dbus.bus.BusConnection, schema: Schema,  # noqa: PLR0917
                 settings: Iterable[Setting], on_change: ChangeCallback | None = None,
                 on_ready: Callable[[], None] | None = None,
                 state_file: Path | str | bool | None = True) -> None:
        """``state_file``: where the last good values are kept (True: :func:`default_state_file`,
        None/False: in memory only)."""
        self._velib = velib
        self._bus = bus
        self._schema = schema
        self._defs: dict[str, Setting] = {s.path: s for s in settings}
        if state_file is True:
            state_file = default_state_file(self._defs.values())
        self._state_file: Path | None = Path(state_file) if state_file else None
        self._last_good: dict[str, Any] = self._load_last_good()
        self._on_change = on_change
        self._on_ready = on_ready
        self._values: dict[str, Any] = {}
        #: stored values being registered (validated singly), for cross-field checks
        self._incoming: dict[str, Any] = {}
        self._extras: dict[str, _Extra] = {}
        self._sd: Any = None
        self._ready = False
        self._watch: Any = None
        self._present = False
        #: path -> reason of the last refusal of that setting (the last good value is kept);
        #: cleared when a new value of that setting is accepted
        self.rejected: dict[str, str] = {}
        #: path -> reason, while the *stored* value is one refused (until written back)
        self._refused_raw: dict[str, str] = {}
        #: how many times the settings were (re-)registered
        self.registrations = 0
        #: path -> the last refusal of that setting (published; see :meth:`refusal_list`)
        self.refusals: dict[str, dict[str, Any]] = {}
        #: how many values were refused since start
        self.refusal_count = 0
        #: how many times a value in force was written back over a refused one
        self.write_backs = 0
        self._write_back_times: dict[str, list[float]] = {}
        self._publishers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._registering = False
        self._pending_refusals: dict[str, Any] = {}
        register_settings_publisher(self)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Begin watching for the settings service; registers as soon as it is there."""
        assert_main_thread("LiveSettings.start")
        if not self._bus.name_has_owner(SETTINGS_SERVICE):
            log.warning("waiting for %s to appear on D-Bus", SETTINGS_SERVICE)
        self._watch = watch_name(self._bus, SETTINGS_SERVICE, self._presence)

    @property
    def ready(self) -> bool:
        """True once the settings have been registered at least once."""
        return self._ready

    @property
    def connected(self) -> bool:
        """True while the settings service is present and our settings are registered."""
        return self._sd is not None

    def _presence(self, present: bool) -> None:
        self._present = present
        if not present:
            if self._sd is not None:
                log.warning("%s left D-Bus; keeping the last values until it returns",
                            SETTINGS_SERVICE)
            self._drop()
            return
        self._register()

    def _drop(self) -> None:
        # Real velib keeps its setting proxies in a class-level table keyed by path; a stale
        # SettingsDevice collected after a new one was made would delete the new entries.
        # Drop the old one and collect it before registering again.
        self._sd = None
        gc.collect()

    def _supported(self) -> dict[str, list[Any]]:
        sup: dict[str, list[Any]] = {}
        for s in self._defs.values():
            sup[s.path] = [s.path, s.dbus_default(), s.dbus_min(), s.dbus_max(), s.silent]
        for path, e in self._extras.items():
            sup[path] = [path, e.default, e.min, e.max, False]
        return sup

    def _register(self) -> None:
        self._drop()
        try:
            sd = self._velib.settingsdevice.SettingsDevice(
                self._bus, self._supported(), self._event, timeout=0)
        except Exception as exc:  # noqa: BLE001 - velib raises plain Exception / DBusException
            log.error("registering settings with %s failed: %s; will retry when it returns",
                      SETTINGS_SERVICE, exc)
            return
        self._sd = sd
        self.registrations += 1
        first = not self._ready
        raws: dict[str, Any] = {}
        for path in list(self._defs) + list(self._extras):
            try:
                raws[path] = sd[path]
            except KeyError:
                log.error("settings service did not register %s", path)
        # Cross-field rules compare each stored value with the other *stored* values (not with
        # defaults of settings not read yet): 46.5 V low-voltage alarm vs the stored 58.4 V.
        self._incoming = {}
        self._registering = True
        self._pending_refusals = {}
        for path, raw in raws.items():
            if path in self._defs:
                try:
                    self._incoming[path] = self._defs[path].validate(raw)
                except SettingValueError:
                    pass
        for path, raw in raws.items():
            old = self._values.get(path)
            if self._accept(path, raw) and not first and old != self._values.get(path):
                log.info("%s changed while the settings service was away: %r -> %r",
                         path, old, self._values[path])
                self._notify(path, old, self._values[path])
        self._incoming = {}
        # A value refused against another that was itself refused may pass now: retry.
        for _ in range(len(self._refused_raw)):
            if not self._retry_rejected(notify=not first):
                break
        self._registering = False
        for path, raw in self._pending_refusals.items():
            if path in self._refused_raw:
                self._record_refusal(path, raw, self._refused_raw[path])
        self._pending_refusals = {}
        if first:
            self._ready = True
            self._save_last_good()
            log.info("registered %d settings with %s", len(self._defs), SETTINGS_SERVICE)
            if LOG_LEVEL_PATH in self._values:
                set_level_from_setting(self._values[LOG_LEVEL_PATH])
            if self._on_ready is not None:
                self._on_ready()
        else:
            log.info("settings registered again after %s restarted", SETTINGS_SERVICE)

    # -- values ----------------------------------------------------------------------------
    def _accept(self, path: str, raw: Any) -> bool:
        """Validate ``raw`` for ``path`` and store it; False (last good kept) if refused."""
        if path in self._extras:
            self._values[path] = raw
            return True
        setting = self._defs[path]
        try:
            value = setting.validate(raw)
        except SettingValueError as exc:
            return self._refuse(path, raw, str(exc))
        candidate = dict(self._all_known())
        candidate[path] = value
        for rule in self._schema.rules_touching(path):
            if rule.a in candidate and rule.b in candidate and not rule.holds(
                    float(candidate[rule.a]), float(candidate[rule.b])):
                return self._refuse(path, raw, rule.message)
        before = self._values.get(path)
        self._values[path] = value
        self._refused_raw.pop(path, None)
        if before is not None and before != value:
            # A new value was accepted (not our own write-back): the refusal is history.
            self.rejected.pop(path, None)
            if self.refusals.pop(path, None):
                self._publish()
        if self._ready:
            self._save_last_good()
        return True

    def _all_known(self) -> dict[str, Any]:
        known = {p: s.dbus_default() for p, s in self._schema.by_path.items()}
        known.update({p: v for p, v in self._values.items() if p in self._defs})
        known.update(self._incoming)
        return known

    def _refuse(self, path: str, raw: Any, why: str) -> bool:
        if path not in self._values:
            # Nothing good yet (a stored value refused at start): the value that was in force
            # before (kept in the state file) if it is still valid, else the schema default.
            self._values[path] = self._fallback(path)
        self._refused_raw[path] = why
        in_force = self._values[path]
        log.error("setting %s = %r refused: %s; keeping %r", path, raw, why, in_force)
        if self._registering:
            # Stored values are checked against each other in passes; only what is still
            # refused after the last pass is a refusal (see _register).
            self._pending_refusals[path] = raw
            return False
        self._record_refusal(path, raw, why)
        return False

    def _record_refusal(self, path: str, raw: Any, why: str) -> None:
        in_force = self._values[path]
        self.rejected[path] = why
        self.refusal_count += 1
        self.refusals[path] = {
            "setting": self._defs[path].key, "path": path, "value": _plain(raw),
            "in_force": _plain(in_force), "rule": why,
            # CLOCK_MONOTONIC is one clock for the whole machine: the web page turns it into
            # a wall-clock time (driver code reads no wall clock; docs/web.md)
            "monotonic": round(time.monotonic(), 1),
        }
        self._schedule_write_back(path, raw)
        self._publish()

    def _fallback(self, path: str) -> Any:
        setting = self._defs[path]
        if path in self._last_good:
            try:
                value = setting.validate(self._last_good[path])
            except SettingValueError:
                pass
            else:
                known = self._all_known()
                known[path] = value
                if all(rule.holds(float(known[rule.a]), float(known[rule.b]))
                       for rule in self._schema.rules_touching(path)
                       if rule.a in known and rule.b in known):
                    log.info("%s: using the last good value %r", path, value)
                    return value
        return setting.dbus_default()

    # -- one truth: writing the value in force back -------------------------------------------
    def _schedule_write_back(self, path: str, raw: Any) -> None:
        """Write the value in force over a refused one, after the current callback returns.

        The settings service then reports our own write as a change to the value in force,
        which :meth:`_accept` takes without effect (it equals what is in force): no loop.
        Should another writer keep writing the refused value, the write-backs stop after
        WRITE_BACK_LIMIT within WRITE_BACK_WINDOW seconds (logged); the driver keeps its value
        either way.
        """
        from gi.repository import GLib

        now = time.monotonic()
        times = [t for t in self._write_back_times.get(path, []) if now - t < WRITE_BACK_WINDOW]
        if len(times) >= WRITE_BACK_LIMIT:
            if len(times) == WRITE_BACK_LIMIT:
                log.error("%s keeps being set to refused values; no longer writing %r back "
                          "for now", path, self._values.get(path))
                times.append(now)
                self._write_back_times[path] = times
            return
        times.append(now)
        self._write_back_times[path] = times
        GLib.idle_add(self._write_back, path, raw)

    def _write_back(self, path: str, raw: Any) -> bool:
        if self._sd is None or path not in self._values:
            return False
        try:
            stored = self._sd[path]
        except KeyError:
            return False
        if stored != raw:
            return False  # changed again meanwhile: that change is judged on its own
        value = self._values[path]
        setting = self._defs[path]
        wrapped = self._velib.ve_utils.wrap_dbus_value(setting.typed(value))

        def done(answer: Any) -> None:
            if int(answer) != 0:
                log.error("writing %s = %r back: the settings service answered %s", path,
                          value, answer)

        def failed(exc: Exception) -> None:
            log.error("writing %s = %r back failed: %s", path, value, exc)

        self.write_backs += 1
        log.info("writing the value in force %s = %r back to %s", path, value,
                 SETTINGS_SERVICE)
        self._bus.call_async(SETTINGS_SERVICE, path, BUSITEM, "SetValue", "v", [wrapped],
                             reply_handler=done, error_handler=failed)
        return False

    # -- last good values, kept across restarts ---------------------------------------------------
    def _load_last_good(self) -> dict[str, Any]:
        if self._state_file is None:
            return {}
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the last good settings from %s: %s", self._state_file, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        return {p: v for p, v in data.items() if p in self._defs}

    def _save_last_good(self) -> None:
        values = {p: v for p, v in self._values.items() if p in self._defs}
        if values == self._last_good:
            return
        self._last_good = dict(values)
        if self._state_file is None:
            return
        tmp = self._state_file.with_suffix(".tmp")
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                fh.write(json.dumps(values, sort_keys=True))
                fh.flush()
                os.fsync(fh.fileno())  # a power cut leaves the old file or the new, never half
            os.replace(tmp, self._state_file)
        except OSError as exc:
            log.warning("cannot keep the last good settings in %s: %s", self._state_file, exc)

    # -- publishing refusals ------------------------------------------------------------------
    def refusal_list(self) -> list[dict[str, Any]]:
        """The refusals in force, oldest first (what :data:`REFUSALS_PATH` holds as JSON)."""
        return sorted(self.refusals.values(), key=lambda r: r["monotonic"])

    def refusal_text(self) -> str:
        """One line for the GUI pages: the latest refusal, or "" when there is none."""
        items = self.refusal_list()
        if not items:
            return ""
        r = items[-1]
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        return (f"{r['setting']} = {r['value']} refused: {r['rule']}; "
                f"{r['in_force']} stays in force{more}")

    def publish_on(self, service: Any) -> None:
        """Add the refusal paths to a (not yet registered) velib service and keep them current.

        :func:`driver.venus.service.create_service` calls this for every service of the
        process, so no driver needs to.
        """
        try:
            service.add_path(REFUSALS_PATH, json.dumps(self.refusal_list()))
            service.add_path(LAST_REFUSAL_PATH, self.refusal_text())
            service.add_path(REFUSAL_COUNT_PATH, self.refusal_count)
        except Exception as exc:  # noqa: BLE001 - a path that exists already, a stand-in
            log.debug("cannot add the refusal paths: %s", exc)
            return
        self._publishers.add(service)

    def _publish(self) -> None:
        values = {REFUSALS_PATH: json.dumps(self.refusal_list()),
                  LAST_REFUSAL_PATH: self.refusal_text(),
                  REFUSAL_COUNT_PATH: self.refusal_count}
        for svc in list(self._publishers):
            try:
                for path, value in values.items():
                    if svc[path] != value:
                        svc[path] = value
            except Exception as exc:  # noqa: BLE001 - a service removed meanwhile
                log.debug("publishing refusals: %s", exc)
                self._publishers.discard(svc)

    def _event(self, path: str, old: Any, new: Any) -> None:
        if path not in self._defs and path not in self._extras:
            return
        before = self._values.get(path)
        if not self._accept(path, new) or before == self._values.get(path):
            return
        if path == LOG_LEVEL_PATH:
            set_level_from_setting(self._values[path])
        if self._ready:
            self._notify(path, before, self._values[path])
        self._recheck_rejected(path)

    def _recheck_rejected(self, changed: str) -> None:
        """Try again the refused values whose rule involves ``changed``.

        A value refused for breaking a cross-field rule (float above absorption) becomes valid
        when the other side of the rule moves (absorption raised): it applies then.
        """
        if self._sd is None:
            return
        related = {p for r in self._schema.rules_touching(changed) for p in (r.a, r.b)}
        for path in [p for p in self._refused_raw if p in related and p != changed]:
            before = self._values.get(path)
            try:
                raw = self._sd[path]
            except KeyError:
                continue
            if self._accept(path, raw) and before != self._values.get(path):
                log.info("setting %s = %r now accepted", path, raw)
                if self._ready:
                    self._notify(path, before, self._values[path])

    def _retry_rejected(self, notify: bool) -> bool:
        """Check every refused value again; True if one was accepted now."""
        progress = False
        for path in list(self._refused_raw):
            before = self._values.get(path)
            try:
                raw = self._sd[path]
            except KeyError:
                continue
            if self._accept(path, raw):
                progress = True
                log.info("setting %s = %r now accepted", path, raw)
                if notify and before != self._values.get(path):
                    self._notify(path, before, self._values[path])
        return progress

    def _notify(self, path: str, old: Any, new: Any) -> None:
        extra = self._extras.get(path)
        cb = extra.callback if extra is not None else self._on_change
        if cb is None:
            return
        try:
            cb(path, old, new)
        except Exception:
            log.exception("error applying setting %s", path)

    def __getitem__(self, path: str) -> Any:
        """The current (last good) value of a setting, by full path or schema key."""
        if path not in self._values and not path.startswith("/"):
            path = f"{self._schema.prefix}/{path}"
        return self._values[path]

    def get(self, path: str, default: Any = None) -> Any:
        try:
            return self[path]
        except KeyError:
            return default

    def set(self, path: str, value: Any) -> int:
        """Write a setting through the settings service. Returns its answer (0 ok, -1 refused).

        The local value follows when the settings service reports the change, as with velib.
        """
        assert_main_thread("LiveSettings.set")
        if not path.startswith("/"):
            path = f"{self._schema.prefix}/{path}"
        if path in self._defs:
            self._defs[path].validate(value)
        try:
            return int(self._bus.call_blocking(
                SETTINGS_SERVICE, path, "com.victronenergy.BusItem", "SetValue", "v",
                [self._velib.ve_utils.wrap_dbus_value(value)]))
        except dbus.exceptions.DBusException as exc:
            log.error("cannot write %s: %s", path, exc.get_dbus_message())
            return -1

    # -- per-device records ------------------------------------------------------------------
    def add(self, path: str, default: SettingValue, minimum: SettingValue = 0,
            maximum: SettingValue = 0, callback: ChangeCallback | None = None) -> Any:
        """Register one more setting outside the schema (per-device records) and return its value.

        ``default``'s Python type fixes the setting's type, so pass ``55.0`` for a float.
        """
        assert_main_thread("LiveSettings.add")
        self._extras[path] = _Extra(default, minimum, maximum, callback)
        if self._sd is not None:
            try:
                self._sd.addSettings({path: [path, default, minimum, maximum, False]})
                self._values[path] = self._sd[path]
            except Exception as exc:  # noqa: BLE001
                log.error("cannot register %s: %s", path, exc)
                self._values.setdefault(path, default)
        else:
            self._values.setdefault(path, default)
        return self._values[path]

    def device_instance(self, uid: str, devclass: str, default_instance: int) -> int:
        """Allocate (or look up) the VRM device instance of device ``uid``.

        Registers ``/Settings/Devices/<uid>/ClassAndVrmInstance`` with default
        ``"<devclass>:<default_instance>"``; the settings service moves it to the next free
        instance of that class on a clash. Returns the instance it holds.
        """
        path = f"/Settings/Devices/{uid}/ClassAndVrmInstance"
        value = self.add(path, f"{devclass}:{default_instance}")
        parsed = parse_class_instance(value)
        if parsed is None or parsed[0] != devclass:
            log.error("%s holds %r; using %s:%d", path, value, devclass, default_instance)
            return default_instance
        return parsed[1]
