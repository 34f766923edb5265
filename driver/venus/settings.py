"""Live Venus settings for the drivers, from the schema.

:class:`LiveSettings` registers a set of schema settings with ``com.victronenergy.settings``
(through velib's ``SettingsDevice``, i.e. ``AddSettings``) with explicit types taken from the
schema, keeps a validated copy of every value, and calls back on every change so it applies at
once. It also:

* waits for the settings service at start (one clear log line, no crash loop), and registers
  again when the settings service restarts, reporting values that changed meanwhile;
* keeps the last good value when a change breaks the schema (range, node-ID syntax, a
  cross-field rule such as float <= absorption) and records why in :attr:`rejected`;
* registers per-device records (``/Settings/Devices/<uid>/ClassAndVrmInstance`` and
  ``CustomName``) on request and returns the device instance the settings service allocated.

Everything runs on the GLib main loop thread.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dbus

from driver.logsetup import set_level_from_setting
from driver.schema import Schema, Setting, SettingValue, SettingValueError
from driver.venus.dbusconn import assert_main_thread, watch_name
from driver.venus.velib import Velib

log = logging.getLogger("canbridge.settings")

SETTINGS_SERVICE = "com.victronenergy.settings"
LOG_LEVEL_PATH = "/Settings/CanBridge/General/LogLevel"

ChangeCallback = Callable[[str, Any, Any], None]


@dataclass
class _Extra:
    default: SettingValue
    min: SettingValue
    max: SettingValue
    callback: ChangeCallback | None


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
                 on_ready: Callable[[], None] | None = None) -> None:
        self._velib = velib
        self._bus = bus
        self._schema = schema
        self._defs: dict[str, Setting] = {s.path: s for s in settings}
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
        #: path -> reason, for changes refused by the schema (the last good value is kept)
        self.rejected: dict[str, str] = {}
        #: how many times the settings were (re-)registered
        self.registrations = 0

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
        for _ in range(len(self.rejected)):
            if not self._retry_rejected(notify=not first):
                break
        if first:
            self._ready = True
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
        self._values[path] = value
        self.rejected.pop(path, None)
        return True

    def _all_known(self) -> dict[str, Any]:
        known = {p: s.dbus_default() for p, s in self._schema.by_path.items()}
        known.update({p: v for p, v in self._values.items() if p in self._defs})
        known.update(self._incoming)
        return known

    def _refuse(self, path: str, raw: Any, why: str) -> bool:
        if path not in self._values:
            # Nothing good yet (a stored value that breaks today's schema): use the default.
            self._values[path] = self._defs[path].dbus_default()
        self.rejected[path] = why
        log.error("setting %s = %r refused: %s; keeping %r", path, raw, why, self._values[path])
        return False

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
        for path in [p for p in self.rejected if p in related and p != changed]:
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
        for path in list(self.rejected):
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
