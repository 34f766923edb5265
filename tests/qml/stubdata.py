"""Python objects behind the stub ``VeQuickItem``/``VBusItem`` of the QML tests.

The stubs call ``attach(item)`` when their uid (gui-v2) or bind (classic) is set and
``setValue(uid, value)`` when a page writes. Two stores answer them: :class:`MemoryStore` (the
schema defaults, for rendering) and :class:`DbusStore` (the settings service on a private bus,
for the round trip). A uid such as ``dbus/com.victronenergy.settings/Settings/X`` or
``mock/com.victronenergy.settings/Settings/X`` names the service (second part) and the path.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QObject, Slot

Key = tuple[str, str]


def split_uid(uid: str) -> Key:
    """``scheme/service.name/some/path`` -> (``service.name``, ``/some/path``)."""
    parts = uid.split("/")
    if len(parts) < 3:
        raise ValueError(f"not a service uid: {uid!r}")
    return parts[1], "/" + "/".join(parts[2:])


def plain(value: Any) -> Any:
    """A D-Bus value as a plain Python value (what a VeQuickItem's QVariant holds)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


class Store:
    """Where values live; subclasses implement read/limits/write."""

    def read(self, key: Key) -> Any:
        raise NotImplementedError

    def limits(self, key: Key) -> tuple[float, float]:
        raise NotImplementedError

    def write(self, key: Key, value: Any) -> int:
        raise NotImplementedError


class MemoryStore(Store):
    """Values in a dict (no limits unless given)."""

    def __init__(self, values: dict[Key, Any], limits: dict[Key, tuple[float, float]]) -> None:
        self.values = dict(values)
        self._limits = dict(limits)
        self.writes: list[tuple[Key, Any]] = []

    def read(self, key: Key) -> Any:
        return self.values.get(key)

    def limits(self, key: Key) -> tuple[float, float]:
        return self._limits.get(key, (math.nan, math.nan))

    def write(self, key: Key, value: Any) -> int:
        self.writes.append((key, value))
        self.values[key] = value
        return 0


class DbusStore(Store):
    """Values read from and written to real D-Bus services (com.victronenergy.BusItem)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus

    def _item(self, key: Key) -> Any:
        import dbus

        return dbus.Interface(self.bus.get_object(key[0], key[1], introspect=False),
                              "com.victronenergy.BusItem")

    def read(self, key: Key) -> Any:
        try:
            return plain(self._item(key).GetValue())
        except Exception:  # noqa: BLE001 - a path that does not exist reads as invalid, as in gui-v2
            return None

    def limits(self, key: Key) -> tuple[float, float]:
        try:
            item = self._item(key)
            lo, hi = float(item.GetMin()), float(item.GetMax())
        except Exception:  # noqa: BLE001 - no limits readable: none shown
            return math.nan, math.nan
        return (math.nan, math.nan) if lo == hi == 0 else (lo, hi)

    def write(self, key: Key, value: Any) -> int:
        import dbus

        current = self.read(key)
        if isinstance(current, int) and isinstance(value, float) and value.is_integer():
            wire: Any = dbus.Int32(int(value))
        elif isinstance(value, str):
            wire = dbus.String(value)
        elif isinstance(value, int):
            wire = dbus.Int32(value)
        else:
            wire = dbus.Double(float(value))
        return int(self._item(key).SetValue(wire))


class StubBackend(QObject):
    """The object the QML stubs find in ``Global._stubBackend`` / ``StubBus._stubBackend``."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.items: dict[Key, list[QObject]] = {}

    @staticmethod
    def uid_of(item: QObject) -> str:
        """The uid of a VeQuickItem stub, or ``dbus/<bind>`` of a VBusItem stub."""
        uid = item.property("uid")
        if uid:
            return str(uid)
        return "dbus/" + str(item.property("bind"))

    @Slot(QObject)
    def attach(self, item: QObject) -> None:
        """Remember ``item`` under its uid and give it the current value and limits."""
        key = split_uid(self.uid_of(item))
        for items in self.items.values():
            if item in items:
                items.remove(item)
        self.items.setdefault(key, []).append(item)
        lo, hi = self.store.limits(key)
        item.setProperty("min", lo)
        item.setProperty("max", hi)
        self._push(key, self.store.read(key))

    @Slot(str, "QVariant", result=int)
    def setValue(self, uid: str, value: Any) -> int:
        """A page writes ``value``: send it to the store (a change comes back as a signal)."""
        key = split_uid(uid)
        result = self.store.write(key, value)
        if isinstance(self.store, MemoryStore):
            self._push(key, value)
        return result

    def changed(self, key: Key, value: Any) -> None:
        """The store reports a new value for ``key``."""
        self._push(key, plain(value))

    def _push(self, key: Key, value: Any) -> None:
        for item in self.items.get(key, []):
            item.setProperty("value", value)
