"""Clean-room stand-in for Venus OS's settings service (``com.victronenergy.settings``).

On a GX device Victron's ``localsettings`` owns ``com.victronenergy.settings``. It is not
installable from any package registry, so off the GX CanBridge runs this module instead::

    python -m sim.venus.settings_service --path DIR [--no-delay] [--seed SEED.xml]

It speaks the same D-Bus protocol, with the same quirks, as far as the fidelity tests in
``tests/venus/test_settings_fidelity.py`` pin them down (the same tests run against the real
``localsettings`` when ``LOCALSETTINGS`` names one):

* Every setting and every group is a D-Bus object. Settings implement
  ``com.victronenergy.BusItem`` (``GetValue``, ``GetText``, ``SetValue``, ``GetMin``,
  ``GetMax``, ``GetDefault``, ``SetDefault``, signal ``PropertiesChanged``) and
  ``com.victronenergy.Settings`` (``GetSilent``, ``GetAttributes``). Groups implement
  ``BusItem.GetValue``/``GetText`` (a dictionary of the subtree) and ``Settings.AddSetting``,
  ``AddSilentSetting``, ``AddSettings`` and ``RemoveSettings`` with paths relative to the group.
  ``/`` additionally has ``BusItem.GetItems``. No ``ItemsChanged`` signal is ever sent.
* A setting's type is fixed when it is created: by the D-Bus type of ``default`` in
  ``AddSettings`` (int32/int64 -> ``i``, double -> ``f``, string -> ``s``; anything else,
  booleans included, is refused) or by the explicit type of ``AddSetting``. Values written later
  are converted with Python's ``int``/``float``/``str`` (so 56.7 -> 56, "42" -> 42, "4.5" is
  refused for an integer); ``SetValue`` returns 0, or -1 when the value cannot be converted or
  is out of range. ``min`` = ``max`` = 0 means unbounded.
* ``/Settings/Devices/<uid>/ClassAndVrmInstance`` (``"battery:512"``) is unique per class: an
  add or a write that would duplicate another device's class and instance takes the next free
  instance instead.
* Settings persist in ``DIR/settings.xml`` (Venus format, see :mod:`sim.venus.settings_store`),
  written atomically 2 s after a change (at once with ``--no-delay``) and on SIGTERM/SIGINT.

Deliberate differences from the real service: no file migrations and no system defaults from
``/etc/venus/settings.d``; no caller check on ``/Settings/System/SecurityProfile``; a corrupt
``settings.xml`` is kept as ``settings.xml.corrupt`` (the real one deletes it); a stored value
that cannot be read falls back to the default; ``--seed``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from sim.venus.settings_store import (
    SETTING_TYPES,
    Setting,
    SettingsFileError,
    Value,
    convert,
    load_settings,
    save_settings,
)

logger = logging.getLogger("settings")

SERVICE_NAME = "com.victronenergy.settings"
BUSITEM = "com.victronenergy.BusItem"
SETTINGS = "com.victronenergy.Settings"
SETTINGS_FILE = "settings.xml"
CORRUPT_SUFFIX = ".corrupt"
DEFAULT_SAVE_DELAY = 2.0

OK = dbus.Int32(0)
REFUSED = dbus.Int32(-1)

_PATH_ELEMENT = re.compile(r"^[A-Za-z0-9_]+$")
_INT32_MAX = 0x7FFFFFFF


class AddError(IntEnum):
    """Result codes of ``AddSetting``/``AddSettings`` (the values the GX uses)."""

    OK = 0
    UNDERSCORE_PREFIX = -2  # a path element starts with '_' (reserved for XML escaping)
    UNKNOWN_TYPE = -3  # type letter unknown, or default of an unsupported D-Bus type
    INVALID_PATH = -4  # 'path' missing or not a string
    TYPE_DIFFERS = -5  # the setting exists with another type
    INVALID_DEFAULT = -6  # default cannot be converted / is no valid class:instance
    DEFAULT_OUT_OF_RANGE = -7  # default outside [min, max]
    IS_GROUP = -8  # the path names a group
    NOT_IN_SETTINGS = -9  # added through '/' with a path outside /Settings/


class PythonError(dbus.exceptions.DBusException):
    """A D-Bus error named like the ones dbus-python sends for an uncaught Python exception.

    The real service fails some calls (``SetDefault`` on a group or on a ``ClassAndVrmInstance``,
    a setting below a setting) with such an error; the stand-in fails them the same way so that
    nothing comes to depend on them working.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, name=f"org.freedesktop.DBus.Python.{kind}")


# --- value wrapping -------------------------------------------------------------------------


def wrap(kind: str, value: Value) -> Any:
    """A stored value as the D-Bus type ``GetValue`` returns (int64 only beyond int32)."""
    if kind == "i":
        return dbus.Int64(value) if int(value) > _INT32_MAX else dbus.Int32(value)
    if kind == "f":
        return dbus.Double(value)
    return dbus.String(value)


def wrap_signal_value(kind: str, value: Value) -> Any:
    """The ``Value`` of a ``PropertiesChanged``: always int32 for integers, as on the GX.

    An integer beyond int32 therefore makes the write fail with an OverflowError after the value
    was stored, exactly as the real service does.
    """
    if kind == "i":
        try:
            return dbus.Int32(value)
        except OverflowError as exc:
            raise PythonError("OverflowError", str(exc)) from exc
    return wrap(kind, value)


def wrap_limit(kind: str, value: Value | None) -> Any:
    """``GetMin``/``GetMax``: the limit, or int32 0 when there is none (whatever the type)."""
    return dbus.Int32(0) if value is None else wrap(kind, value)


def parse_class_instance(value: object) -> tuple[str, int] | None:
    """Split ``"battery:512"`` into ``("battery", 512)``; ``None`` if it is not of that form."""
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if len(parts) != 2:
        return None
    try:
        return parts[0], int(parts[1])
    except ValueError:
        return None


def split_path(path: str) -> list[str]:
    """Path elements of an absolute or relative object path; raises on malformed paths."""
    parts = path[1:].split("/") if path.startswith("/") else path.split("/")
    if parts == [""]:
        return []
    for part in parts:
        if not _PATH_ELEMENT.match(part):
            raise PythonError("ValueError", f"invalid object path {path!r}")
    return parts


# --- D-Bus objects --------------------------------------------------------------------------


class SettingItem(dbus.service.Object):
    """One setting, exported at its own object path."""

    def __init__(self, store: SettingsService, path: str, parent: GroupItem, data: Setting):
        super().__init__(store.bus, path)
        self.store = store
        self.path = path
        self.parent = parent
        self.data = data

    @property
    def name(self) -> str:
        """The last path element."""
        return self.path.rsplit("/", 1)[1]

    def text(self) -> str:
        """The value as text (``str`` of the value; settings are never invalid)."""
        return str(self.data.value)

    def properties(self) -> dbus.Dictionary:
        """The entry of this setting in ``GetItems``."""
        d = self.data
        props = dbus.Dictionary(signature="sv")
        props["Value"] = wrap(d.kind, d.value)
        props["Text"] = dbus.String(self.text())
        for key, value in (("Max", d.maximum), ("Min", d.minimum), ("Default", d.default)):
            if value is not None:
                props[key] = wrap(d.kind, value)
        return props

    # The protocol -------------------------------------------------------------------------

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetValue(self) -> Any:
        """The current value."""
        return wrap(self.data.kind, self.data.value)

    @dbus.service.method(BUSITEM, in_signature="", out_signature="s")
    def GetText(self) -> str:
        """The current value as text."""
        return self.text()

    @dbus.service.method(BUSITEM, in_signature="v", out_signature="i")
    def SetValue(self, value: Any) -> dbus.Int32:
        """Write a value: 0 when stored (or unchanged), -1 when unconvertible or out of range."""
        return self.write(value)

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetMin(self) -> Any:
        """The minimum, or int32 0 when unbounded."""
        return wrap_limit(self.data.kind, self.data.minimum)

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetMax(self) -> Any:
        """The maximum, or int32 0 when unbounded."""
        return wrap_limit(self.data.kind, self.data.maximum)

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetDefault(self) -> Any:
        """The default, or int32 -1 for a setting without one (only from a hand-made file)."""
        if self.data.default is None:
            return REFUSED
        return wrap(self.data.kind, self.data.default)

    @dbus.service.method(BUSITEM, in_signature="", out_signature="i")
    def SetDefault(self) -> dbus.Int32:
        """Write the default back; 0 (even when the write is refused), -1 without a default."""
        return self.reset_to_default()

    @dbus.service.signal(BUSITEM, signature="a{sv}")
    def PropertiesChanged(self, changes: dict[str, Any]) -> None:
        """Sent on every change of the value or the attributes."""

    @dbus.service.method(SETTINGS, in_signature="", out_signature="b")
    def GetSilent(self) -> bool:
        """True for a silent setting (its changes are not logged)."""
        return dbus.Boolean(self.data.silent)

    @dbus.service.method(SETTINGS, in_signature="", out_signature="vvvi")
    def GetAttributes(self) -> tuple[Any, Any, Any, dbus.Int32]:
        """``(default, min, max, silent)``."""
        d = self.data
        default = REFUSED if d.default is None else wrap(d.kind, d.default)
        return (
            default,
            wrap_limit(d.kind, d.minimum),
            wrap_limit(d.kind, d.maximum),
            dbus.Int32(int(d.silent)),
        )

    # Behaviour ----------------------------------------------------------------------------

    def write(self, raw: Any) -> dbus.Int32:
        """The ``SetValue`` rules; see :meth:`SetValue`."""
        value = convert(self.data.kind, raw)
        if value is None or not self.data.accepts(value):
            return REFUSED
        if value == self.data.value:
            return OK
        if not self.apply(value):
            return REFUSED
        return OK

    def reset_to_default(self) -> dbus.Int32:
        """The ``SetDefault`` rules; see :meth:`SetDefault`."""
        if self.data.default is None:
            return REFUSED
        self.write(self.data.default)
        return OK

    def adjust(self, value: Value) -> Value | None:
        """Hook: the value actually stored for ``value``; ``None`` to refuse it."""
        return value

    def apply(self, value: Value, *, with_attributes: bool = False, log: bool = True) -> bool:
        """Store ``value`` (through :meth:`adjust`), schedule a save and signal the change."""
        adjusted = self.adjust(value)
        if adjusted is None:
            return False
        d = self.data
        if log and not d.silent:
            logger.info("%s changed from %r to %r", self.path, d.value, adjusted)
        d.value = adjusted
        self.store.schedule_save()
        changes: dict[str, Any] = {
            "Value": wrap_signal_value(d.kind, adjusted),
            "Text": self.text(),
        }
        if with_attributes:
            changes["Default"] = REFUSED if d.default is None else wrap(d.kind, d.default)
            if d.kind != "s":
                changes["Min"] = wrap_limit(d.kind, d.minimum)
                changes["Max"] = wrap_limit(d.kind, d.maximum)
        self.PropertiesChanged(changes)
        return True

    def default_is_valid(self, default: Value) -> bool:
        """Hook: whether ``default`` is acceptable for this kind of setting."""
        return True

    def unexport(self) -> None:
        """Announce the setting as gone (invalid value) and take it off the bus."""
        self.PropertiesChanged({"Value": dbus.Array([], signature="i"), "Text": ""})
        self.remove_from_connection()


class ClassAndVrmInstanceItem(SettingItem):
    """``/Settings/Devices/<uid>/ClassAndVrmInstance``: unique ``class:instance`` per device."""

    def adjust(self, value: Value) -> Value | None:
        parsed = parse_class_instance(value)
        if parsed is None:
            return None
        return self.store.free_instance(parsed[0], parsed[1], self)

    def default_is_valid(self, default: Value) -> bool:
        return parse_class_instance(default) is not None

    def reset_to_default(self) -> dbus.Int32:
        # The GX service fails this call (a Python TypeError inside localsettings); an instance
        # is never reset to its default, the stand-in refuses it the same way.
        raise PythonError("TypeError", "SetDefault is not supported on ClassAndVrmInstance")


class GroupItem(dbus.service.Object):
    """A group of settings (a D-Bus object whose children are groups and settings)."""

    def __init__(
        self, store: SettingsService, path: str, parent: GroupItem | None, removable: bool = True
    ):
        super().__init__(store.bus, path)
        self.store = store
        self.path = path
        self.parent = parent
        self.removable = removable
        self.children: dict[str, GroupItem | SettingItem] = {}

    @property
    def prefix(self) -> str:
        """This group's path as a prefix for children (``""`` for the root)."""
        return "" if self.path == "/" else self.path

    def settings(self) -> Iterator[SettingItem]:
        """Every setting in this group's subtree."""
        for child in self.children.values():
            if isinstance(child, SettingItem):
                yield child
            else:
                yield from child.settings()

    def _subtree(self, fn: Callable[[SettingItem], Any], signature: str) -> dbus.Dictionary:
        skip = len(self.prefix) + 1
        out = dbus.Dictionary(signature=signature, variant_level=1)
        for item in self.settings():
            out[item.path[skip:]] = fn(item)
        return out

    def absolute(self, relative: str) -> str:
        """The absolute path of ``relative`` (a path below this group, leading '/' optional)."""
        parts = split_path(relative)
        return self.prefix + "".join("/" + p for p in parts)

    # The protocol -------------------------------------------------------------------------

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetValue(self) -> Any:
        """``{relative path: value}`` of every setting below this group."""
        return self._subtree(lambda s: wrap(s.data.kind, s.data.value), "sv")

    @dbus.service.method(BUSITEM, in_signature="", out_signature="v")
    def GetText(self) -> Any:
        """``{relative path: text}`` of every setting below this group."""
        return self._subtree(lambda s: dbus.String(s.text()), "ss")

    @dbus.service.method(BUSITEM, in_signature="", out_signature="i")
    def SetDefault(self) -> dbus.Int32:
        """Fails, as on the GX (resetting a whole group is broken there)."""
        raise PythonError("TypeError", "SetDefault is not supported on a group")

    @dbus.service.method(SETTINGS, in_signature="ssvsvv", out_signature="i")
    def AddSetting(  # noqa: PLR0917 - the argument list is the D-Bus signature
        self, group: str, name: str, default: Any, kind: str, minimum: Any, maximum: Any
    ) -> dbus.Int32:
        """Add (or update) ``group/name`` below this group; returns an :class:`AddError`."""
        return self._add_legacy(group, name, (default, kind, minimum, maximum), silent=False)

    @dbus.service.method(SETTINGS, in_signature="ssvsvv", out_signature="i")
    def AddSilentSetting(  # noqa: PLR0917 - the argument list is the D-Bus signature
        self, group: str, name: str, default: Any, kind: str, minimum: Any, maximum: Any
    ) -> dbus.Int32:
        """As :meth:`AddSetting`, for a silent setting."""
        return self._add_legacy(group, name, (default, kind, minimum, maximum), silent=True)

    @dbus.service.method(SETTINGS, in_signature="aa{sv}", out_signature="aa{sv}")
    def AddSettings(self, definitions: Sequence[dict[str, Any]]) -> dbus.Array:
        """Add several settings: entries ``{path, default[, min, max, silent]}``.

        The type comes from the D-Bus type of ``default``. Each result is ``{path, error}``
        plus ``value`` (the current value) when the setting exists afterwards.
        """
        results = dbus.Array(signature="a{sv}")
        for entry in definitions:
            result = dbus.Dictionary(signature="sv")
            results.append(result)
            path = entry.get("path")
            if not isinstance(path, dbus.String):
                if path:
                    result["path"] = path
                result["error"] = dbus.Int32(AddError.INVALID_PATH)
                continue
            result["path"] = path
            kind = kind_of_default(entry.get("default"))
            if kind is None:
                result["error"] = dbus.Int32(AddError.UNKNOWN_TYPE)
                continue
            code, item = self.store.add(
                self,
                str(path),
                default=entry.get("default"),
                kind=kind,
                minimum=entry.get("min"),
                maximum=entry.get("max"),
                silent=bool(entry.get("silent")),
            )
            result["error"] = dbus.Int32(code)
            if item is not None:
                result["value"] = wrap(item.data.kind, item.data.value)
        return results

    @dbus.service.method(SETTINGS, in_signature="as", out_signature="ai")
    def RemoveSettings(self, paths: Sequence[str]) -> dbus.Array:
        """Remove settings (paths relative to this group): 0 per removed one, -1 if unknown."""
        codes = dbus.Array(signature="i")
        for path in paths:
            codes.append(OK if self.store.remove(self, str(path)) else REFUSED)
        self.store.schedule_save()
        return codes

    def _add_legacy(
        self, group: str, name: str, spec: tuple[Any, str, Any, Any], *, silent: bool
    ) -> dbus.Int32:
        default, kind, minimum, maximum = spec
        base = str(group) if group.startswith("/") or group == "" else "/" + str(group)
        relative = base + (str(name) if name.startswith("/") else "/" + str(name))
        code, _item = self.store.add(
            self,
            relative,
            default=default,
            kind=str(kind),
            minimum=minimum,
            maximum=maximum,
            silent=silent,
        )
        return dbus.Int32(code)


class RootItem(GroupItem):
    """The object at ``/``: a group that also answers ``GetItems``."""

    @dbus.service.method(BUSITEM, in_signature="", out_signature="a{sa{sv}}")
    def GetItems(self) -> dbus.Dictionary:
        """``{absolute path: {Value, Text, Min, Max, Default}}`` for every setting."""
        return dbus.Dictionary(
            {item.path: item.properties() for item in self.settings()}, signature="sa{sv}"
        )


def kind_of_default(default: object) -> str | None:
    """The setting type implied by the D-Bus type of an ``AddSettings`` default."""
    if isinstance(default, dbus.Int32 | dbus.Int64):
        return "i"
    if isinstance(default, dbus.Double):
        return "f"
    if isinstance(default, dbus.String):
        return "s"
    return None  # bool, byte, int16, uint32, ... are refused


def is_class_instance_path(path: str) -> bool:
    """True for ``/Settings/Devices/<uid>/ClassAndVrmInstance``."""
    parts = path.split("/")
    return (
        len(parts) == 5
        and parts[1:3] == ["Settings", "Devices"]
        and parts[4] == "ClassAndVrmInstance"
    )


# --- the service ----------------------------------------------------------------------------


class SettingsService:
    """The settings tree on a bus connection, with its file and save timer."""

    def __init__(self, bus: dbus.bus.BusConnection, datadir: Path, save_delay: float):
        self.bus = bus
        self.file = datadir / SETTINGS_FILE
        self.save_delay = save_delay
        self._save_source: int | None = None
        self.root = RootItem(self, "/", None, removable=False)
        settings = GroupItem(self, "/Settings", self.root, removable=False)
        self.root.children["Settings"] = settings
        self.devices = GroupItem(self, "/Settings/Devices", settings, removable=False)
        settings.children["Devices"] = self.devices

    # tree ---------------------------------------------------------------------------------

    def find(self, path: str) -> GroupItem | SettingItem | None:
        """The object at absolute ``path`` or ``None``."""
        node: GroupItem | SettingItem = self.root
        for part in split_path(path):
            if not isinstance(node, GroupItem) or part not in node.children:
                return None
            node = node.children[part]
        return node

    def _group_for(self, path: str) -> GroupItem:
        """The parent group of absolute ``path``, creating missing groups."""
        node: GroupItem = self.root
        for part in split_path(path)[:-1]:
            child = node.children.get(part)
            if child is None:
                child = GroupItem(self, node.prefix + "/" + part, node)
                node.children[part] = child
            elif isinstance(child, SettingItem):
                raise PythonError(
                    "KeyError", f"{child.path} is a setting and cannot hold other settings"
                )
            node = child
        return node

    def _create(self, path: str, data: Setting) -> SettingItem:
        parent = self._group_for(path)
        cls = ClassAndVrmInstanceItem if is_class_instance_path(path) else SettingItem
        item = cls(self, path, parent, data)
        parent.children[item.name] = item
        return item

    def all_settings(self) -> Iterator[SettingItem]:
        """Every setting."""
        return self.root.settings()

    # operations ---------------------------------------------------------------------------

    def add(
        self,
        base: GroupItem,
        relative: str,
        *,
        default: Any,
        kind: str,
        minimum: Any,
        maximum: Any,
        silent: bool,
    ) -> tuple[AddError, SettingItem | None]:
        """Add or update a setting at ``relative`` below ``base``; the AddSetting(s) rules."""
        if "/_" in relative:
            return AddError.UNDERSCORE_PREFIX, None
        if kind not in SETTING_TYPES:
            return AddError.UNKNOWN_TYPE, None
        default = convert(kind, default)
        if default is None:
            return AddError.INVALID_DEFAULT, None
        minimum = convert(kind, minimum)
        maximum = convert(kind, maximum)
        if kind == "s":
            minimum = maximum = None
        else:
            if minimum == 0 and maximum == 0:
                minimum = maximum = None  # 0/0 is how clients say "no limits"
            if not Setting(kind, default, None, minimum, maximum).accepts(default):
                return AddError.DEFAULT_OUT_OF_RANGE, None
        if base is self.root and not relative.startswith("/Settings/"):
            return AddError.NOT_IN_SETTINGS, None

        path = base.absolute(relative)
        wanted = Setting(kind, default, default, minimum, maximum, silent)
        existing = self.find(path)
        if isinstance(existing, GroupItem):
            return AddError.IS_GROUP, None
        if existing is None:
            if is_class_instance_path(path) and parse_class_instance(default) is None:
                return AddError.INVALID_DEFAULT, None
            item = self._create(path, wanted)
            item.apply(default, with_attributes=True, log=False)
            logger.info(
                "added %s (type %s, default %r, min %r, max %r%s)",
                path,
                kind,
                default,
                minimum,
                maximum,
                ", silent" if silent else "",
            )
            return AddError.OK, item

        if existing.data.kind != kind:
            return AddError.TYPE_DIFFERS, None
        if not existing.default_is_valid(default):
            return AddError.INVALID_DEFAULT, existing
        if existing.data.same_attributes(wanted):
            return AddError.OK, existing
        # Re-adding keeps the current value (even outside a new range) and updates the rest.
        d = existing.data
        d.default, d.minimum, d.maximum, d.silent = default, minimum, maximum, silent
        existing.apply(d.value, with_attributes=True, log=False)
        logger.info(
            "updated %s (default %r, min %r, max %r%s)",
            path,
            default,
            minimum,
            maximum,
            ", silent" if silent else "",
        )
        return AddError.OK, existing

    def remove(self, base: GroupItem, relative: str) -> bool:
        """Remove the setting at ``relative`` below ``base``; False if there is none."""
        try:
            item = self.find(base.absolute(relative))
        except dbus.exceptions.DBusException:
            return False
        if not isinstance(item, SettingItem):
            return False
        item.unexport()
        self._drop(item)
        logger.info("removed %s", item.path)
        return True

    def _drop(self, item: SettingItem) -> None:
        """Detach the (already unexported) ``item`` and remove groups left empty."""
        del item.parent.children[item.name]
        group: GroupItem | None = item.parent
        while group is not None and group.removable and not group.children:
            group.remove_from_connection()
            if group.parent is not None:
                del group.parent.children[group.path.rsplit("/", 1)[1]]
            group = group.parent

    def free_instance(self, dev_class: str, instance: int, asking: SettingItem) -> str:
        """``class:instance``, or the next instance of ``dev_class`` no other device uses."""
        taken = {
            item.data.value
            for item in self.devices.settings()
            if item is not asking
            and item.name == "ClassAndVrmInstance"
            and str(item.data.value).startswith(dev_class + ":")
        }
        while f"{dev_class}:{instance}" in taken:
            instance += 1
        return f"{dev_class}:{instance}"

    # persistence --------------------------------------------------------------------------

    def load(self, seed: Path | None = None) -> None:
        """Load ``settings.xml`` (or ``seed`` when there is none); a corrupt file is set aside."""
        source = self.file
        if not self.file.exists():
            if seed is None:
                logger.warning("%s not found, starting with no settings", self.file)
                self.save()
                return
            source = seed
        try:
            loaded = load_settings(source)
        except (SettingsFileError, OSError) as exc:
            logger.error("%s is unreadable (%s); starting with no settings", source, exc)
            if source == self.file:
                kept = self.file.with_name(self.file.name + CORRUPT_SUFFIX)
                shutil.copyfile(self.file, kept)
                logger.error("the unreadable file is kept as %s", kept)
            loaded = {}
        for path, data in loaded.items():
            try:
                self._create(path, data)
            except (dbus.exceptions.DBusException, KeyError) as exc:
                logger.error("%s: cannot load this setting: %s", path, exc)
        logger.info("loaded %d settings from %s", len(loaded), source)
        if source != self.file or not loaded:
            self.save()

    def save(self) -> None:
        """Write every setting to ``settings.xml`` now."""
        if self._save_source is not None:
            GLib.source_remove(self._save_source)
            self._save_source = None
        save_settings(self.file, ((s.path, s.data) for s in self.all_settings()))
        logger.debug("saved %s", self.file)

    def _save_due(self) -> bool:
        self._save_source = None
        try:
            self.save()
        except OSError:
            logger.exception("saving %s failed", self.file)
        return False

    def schedule_save(self) -> None:
        """Save after the debounce delay (changes within it are written together)."""
        if self._save_source is None:
            self._save_source = GLib.timeout_add(int(self.save_delay * 1000), self._save_due)

    @property
    def save_pending(self) -> bool:
        """True while a change has not been written yet."""
        return self._save_source is not None


# --- process ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line: the real service's ``--path`` and ``--no-delay``, plus ``--seed``."""
    parser = argparse.ArgumentParser(description="Stand-in for com.victronenergy.settings")
    parser.add_argument("--path", default=".", help="directory of settings.xml (default: .)")
    parser.add_argument(
        "--no-delay", action="store_true", help="write changes at once instead of after 2 s"
    )
    parser.add_argument(
        "--seed", type=Path, help="settings file to start from when settings.xml does not exist"
    )
    return parser.parse_args(argv)


def connect() -> dbus.bus.BusConnection:
    """The session bus when ``DBUS_SESSION_BUS_ADDRESS`` is set, else the system bus."""
    if "DBUS_SESSION_BUS_ADDRESS" in os.environ:
        return dbus.SessionBus()
    return dbus.SystemBus()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args = parse_args(argv)
    datadir = Path(args.path)
    if not datadir.is_dir():
        logger.error("settings directory %s does not exist", datadir)
        return errno.ENOENT

    DBusGMainLoop(set_as_default=True)
    bus = connect()
    service = SettingsService(bus, datadir, 0.0 if args.no_delay else DEFAULT_SAVE_DELAY)
    service.load(args.seed)

    loop = GLib.MainLoop()

    def stop(signame: str) -> bool:
        logger.info("%s received, stopping", signame)
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop, "SIGINT")

    # Claim the name only once every setting is on the bus: a client that sees the name can
    # read everything at once.
    reply = bus.request_name(SERVICE_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    owned = (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER, dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER)
    if reply not in owned:
        logger.error("%s is already owned by another process", SERVICE_NAME)
        return 1
    logger.info("serving %s from %s", SERVICE_NAME, service.file)
    loop.run()

    if service.save_pending:
        logger.info("writing pending changes")
        service.save()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
