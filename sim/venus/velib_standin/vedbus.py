"""Publishing and importing BusItem values, a clean-room stand-in for velib_python's ``vedbus``.

Written from the observable behaviour of Victron's velib_python (module, class, method and
argument names are kept so driver code runs unchanged against either), not from its code.

Publishing (``VeDbusService``):

* every value is a D-Bus object at its path implementing ``com.victronenergy.BusItem``
  (``GetValue``, ``GetText``, ``SetValue``, ``GetDescription``, signal ``PropertiesChanged``);
  every intermediate node answers ``GetValue``/``GetText`` with its subtree, and ``/`` also
  answers ``GetItems`` and emits ``ItemsChanged``;
* ``service[path] = v`` emits ``PropertiesChanged`` on the path when the value changed (compared
  with ``==``, so ``1``, ``1.0`` and ``True`` are all "unchanged" relative to each other);
* writes made through the object returned by ``with service as s:`` are collected and sent as
  ONE ``ItemsChanged`` on ``/`` when the block ends, with no ``PropertiesChanged`` at all;
  writes made on ``service`` itself inside the block are still sent immediately;
* ``SetValue`` over D-Bus answers 0 (accepted, or equal to the current value), 1 (path not
  writeable, or the value could not be converted to ``valuetype``) or 2 (the path's
  ``onchangecallback`` returned a false value).

Importing (``VeDbusItemImport``): a cached view of one remote path, kept up to date from
``PropertiesChanged`` on the path and ``ItemsChanged`` on the service root. Unlike the original
this keeps no class-level registry: each importer holds its own signal matches on the bus it
was given.
"""

from __future__ import annotations

import logging
import os
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import dbus
import dbus.exceptions
import dbus.service
from ve_utils import unwrap_dbus_value, wrap_dbus_value

BUSITEM = "com.victronenergy.BusItem"

logger = logging.getLogger(__name__)

_NOTSET: Any = object()

OnChange = Callable[[str, Any], Any]
GetTextCallback = Callable[[str, Any], str]


def _default_bus() -> dbus.bus.BusConnection:
    """The shared session bus when an address is in the environment, else the system bus."""
    if "DBUS_SESSION_BUS_ADDRESS" in os.environ:
        return dbus.SessionBus()
    return dbus.SystemBus()


class VeDbusService:
    """A D-Bus service publishing BusItem paths.

    ``register=False`` is the intended use: create the service, add every path (at least the
    mandatory ones, including ``/DeviceInstance``), then call :meth:`register`. ``register=True``
    claims the name at once; ``register=None`` (the historic default) does the same and logs a
    warning. Use one bus connection per service (pass a private ``dbus.bus.BusConnection``): the
    root object ``/`` can exist only once per connection, so a second service on the same
    connection fails while it is constructed.
    """

    def __init__(
        self,
        servicename: str,
        bus: dbus.bus.BusConnection | None = None,
        register: bool | None = None,
    ) -> None:
        self.name = servicename
        self._dbusconn = bus if bus is not None else _default_bus()
        self.dbusconn = self._dbusconn
        self._dbusobjects: dict[str, VeDbusItemExport] = {}
        self._dbusnodes: dict[str, VeDbusTreeExport] = {}
        self._onchangecallbacks: dict[str, OnChange] = {}
        self._ratelimiters: list[ServiceContext] = []
        self._registered = False
        self.root = VeDbusRootExport(self._dbusconn, "/", self)
        self._dbusnodes["/"] = self.root

        if register is None:
            logger.warning(
                "%s: registering on D-Bus before any path exists (register=None); create the "
                "service with register=False, add the paths, then call register()",
                servicename,
            )
            self.register()
        elif register:
            self.register()

    def register(self) -> None:
        """Claim the service name without queueing; raise ``NameExistsException`` if taken."""
        reply = self._dbusconn.request_name(self.name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        if reply not in (
            dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER,
            dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER,
        ):
            raise dbus.exceptions.NameExistsException(self.name)
        self._registered = True
        logger.info("registered on D-Bus as %s", self.name)

    def __del__(self) -> None:
        """Remove every object from the connection and give the name back.

        Call it explicitly (``service.__del__()``) to take the service off the bus at once.
        """
        for node in list(getattr(self, "_dbusnodes", {}).values()):
            node._remove()
        if hasattr(self, "_dbusnodes"):
            self._dbusnodes.clear()
        for item in list(getattr(self, "_dbusobjects", {}).values()):
            item._remove()
        if hasattr(self, "_dbusobjects"):
            self._dbusobjects.clear()
        if getattr(self, "_registered", False):
            self._registered = False
            try:
                self._dbusconn.release_name(self.name)
            except dbus.exceptions.DBusException:
                pass

    def get_name(self) -> str:
        """The service name, e.g. ``com.victronenergy.battery.socketcan_can0``."""
        return self.name

    def add_path(  # noqa: PLR0917 - velib_python takes these positionally
        self,
        path: str,
        value: Any,
        description: str = "",
        writeable: bool = False,
        onchangecallback: OnChange | None = None,
        gettextcallback: GetTextCallback | None = None,
        valuetype: Callable[[Any], Any] | None = None,
        itemtype: type[VeDbusItemExport] | None = None,
    ) -> VeDbusItemExport:
        """Publish ``path`` with an initial ``value`` (``None`` = invalid) and return its item.

        ``onchangecallback(path, newvalue)`` decides on writes from other processes (true =
        accept). ``gettextcallback(path, value)`` renders ``GetText``. ``valuetype`` converts
        written values (``int``, ``float``, ...); a failed conversion refuses the write.
        """
        if onchangecallback is not None:
            self._onchangecallbacks[path] = onchangecallback
        cls = itemtype or VeDbusItemExport
        item = cls(
            self._dbusconn,
            path,
            value,
            description,
            writeable,
            self._value_changed,
            gettextcallback,
            deletecallback=self._item_deleted,
            valuetype=valuetype,
        )
        parts = path.split("/")
        for depth in range(2, len(parts)):
            node_path = "/".join(parts[:depth])
            if node_path not in self._dbusnodes and node_path not in self._dbusobjects:
                self._dbusnodes[node_path] = VeDbusTreeExport(self._dbusconn, node_path, self)
        self._dbusobjects[path] = item
        return item

    def add_mandatory_paths(  # noqa: PLR0917 - velib_python takes these positionally
        self,
        processname: str,
        processversion: str,
        connection: str,
        deviceinstance: int,
        productid: int,
        productname: str,
        firmwareversion: Any,
        hardwareversion: Any,
        connected: int,
    ) -> None:
        """Add the paths every Venus device service must have (``/Mgmt/*``, ``/DeviceInstance``,
        ``/ProductId``, ``/ProductName``, ``/FirmwareVersion``, ``/HardwareVersion``,
        ``/Connected``)."""
        for path, value in (
            ("/Mgmt/ProcessName", processname),
            ("/Mgmt/ProcessVersion", processversion),
            ("/Mgmt/Connection", connection),
            ("/DeviceInstance", deviceinstance),
            ("/ProductId", productid),
            ("/ProductName", productname),
            ("/FirmwareVersion", firmwareversion),
            ("/HardwareVersion", hardwareversion),
            ("/Connected", connected),
        ):
            self.add_path(path, value)

    def _value_changed(self, path: str, newvalue: Any) -> Any:
        callback = self._onchangecallbacks.get(path)
        if callback is None:
            return True
        return callback(path, newvalue)

    def _item_deleted(self, path: str) -> None:
        # The path's onchangecallback is kept (as velib_python does): re-adding the path without
        # a callback still uses the old one.
        self._dbusobjects.pop(path, None)
        for node_path in list(self._dbusnodes):
            if node_path == "/":
                continue
            prefix = node_path + "/"
            if not any(p.startswith(prefix) for p in self._dbusobjects):
                self._dbusnodes.pop(node_path)._remove()

    def __getitem__(self, path: str) -> Any:
        return self._dbusobjects[path].local_get_value()

    def __setitem__(self, path: str, newvalue: Any) -> None:
        self._dbusobjects[path].local_set_value(newvalue)

    def __delitem__(self, path: str) -> None:
        # Removes the object from the bus without sending any signal.
        self._dbusobjects[path]._remove()

    def __contains__(self, path: str) -> bool:
        return path in self._dbusobjects

    def __enter__(self) -> ServiceContext:
        context = ServiceContext(self)
        self._ratelimiters.append(context)
        return context

    def __exit__(self, *exc: object) -> None:
        # Nested blocks each send their own part when they end.
        if self._ratelimiters:
            self._ratelimiters.pop().flush()


class ServiceContext:
    """The object bound by ``with service as s:``; collects writes into one ``ItemsChanged``."""

    def __init__(self, parent: VeDbusService) -> None:
        self.parent = parent
        self.changes: dict[str, dict[str, Any]] = {}

    def __contains__(self, path: str) -> bool:
        return path in self.parent

    def __getitem__(self, path: str) -> Any:
        return self.parent[path]

    def __setitem__(self, path: str, newvalue: Any) -> None:
        change = self.parent._dbusobjects[path]._local_set_value(newvalue)
        if change is not None:
            self.changes[path] = change

    def __delitem__(self, path: str) -> None:
        self.changes.pop(path, None)
        del self.parent[path]

    def flush(self) -> None:
        """Send the collected changes (if any) as one ``ItemsChanged`` and forget them."""
        if self.changes:
            self.parent.root.ItemsChanged(dict(self.changes))
            self.changes.clear()

    def add_path(self, path: str, value: Any, *args: Any, **kwargs: Any) -> VeDbusItemExport:
        """Add a path; its initial value is announced in the block's ``ItemsChanged``."""
        item = self.parent.add_path(path, value, *args, **kwargs)
        self.changes[path] = {"Value": wrap_dbus_value(value), "Text": item.GetText()}
        return item

    def del_tree(self, root: str) -> None:
        """Invalidate (announced in the batch) and remove ``root`` and everything below it."""
        root = root.rstrip("/")
        for path in list(self.parent._dbusobjects):
            if path == root or path.startswith(root + "/"):
                self[path] = None
                self.parent._dbusobjects[path]._remove()

    def get_name(self) -> str:
        return self.parent.get_name()


class _WeakMethod:
    """Calls a bound method without keeping its object alive (for signal receivers)."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._ref = weakref.WeakMethod(method)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        method = self._ref()
        if method is not None:
            method(*args, **kwargs)


class VeDbusItemImport:
    """A cached, signal-tracked view of one path of another service.

    ``get_value()`` is the cache (``None`` when invalid or absent). With ``createsignal`` the
    cache follows ``PropertiesChanged`` on the path and ``ItemsChanged`` on the service's ``/``,
    and ``eventCallback(serviceName, path, changes)`` is called with ``changes`` holding the
    unwrapped ``Value`` and the ``Text``. An exception in ``eventCallback`` ends the process.
    """

    def __init__(  # noqa: PLR0917 - velib_python takes these positionally
        self,
        bus: dbus.bus.BusConnection,
        serviceName: str,
        path: str,
        eventCallback: Callable[[str, str, dict[str, Any]], Any] | None = None,
        createsignal: bool = True,
        initialValue: Any = _NOTSET,
    ) -> None:
        self._serviceName = serviceName
        self._path = path
        self._matches: list[Any] = []
        self._proxy = bus.get_object(serviceName, path, introspect=False)
        self.eventCallback = eventCallback
        assert eventCallback is None or createsignal, "an eventCallback needs createsignal"
        if createsignal:
            self._matches.append(
                bus.add_signal_receiver(
                    _WeakMethod(self._properties_changed_handler),
                    signal_name="PropertiesChanged",
                    dbus_interface=BUSITEM,
                    bus_name=serviceName,
                    path=path,
                )
            )
            self._matches.append(
                bus.add_signal_receiver(
                    _WeakMethod(self._items_changed_handler),
                    signal_name="ItemsChanged",
                    dbus_interface=BUSITEM,
                    bus_name=serviceName,
                    path="/",
                )
            )
        if initialValue is _NOTSET:
            self._cachedvalue: Any = None
            try:
                self._cachedvalue = unwrap_dbus_value(self._proxy.GetValue())
            except dbus.exceptions.DBusException:
                pass
        else:
            self._cachedvalue = initialValue

    def __del__(self) -> None:
        for match in getattr(self, "_matches", []):
            try:
                match.remove()
            except Exception:  # noqa: BLE001 - best-effort cleanup in __del__
                pass
        self._matches = []
        self._proxy = None

    def _refreshcachedvalue(self) -> None:
        self._cachedvalue = unwrap_dbus_value(self._proxy.GetValue())

    @property
    def path(self) -> str:
        """The object path, e.g. ``/Dc/0/Voltage``."""
        return self._path

    @property
    def serviceName(self) -> str:
        """The service name, e.g. ``com.victronenergy.battery.ttyO1``."""
        return self._serviceName

    def get_value(self) -> Any:
        """The cached value (``None`` when invalid or when the path does not exist)."""
        return self._cachedvalue

    def set_value(self, newvalue: Any) -> int:
        """Call ``SetValue``; on success (0) re-read the value into the cache at once."""
        result = self._proxy.SetValue(wrap_dbus_value(newvalue))
        if result == 0:
            self._refreshcachedvalue()
        return result

    def set_default(self) -> None:
        """Call ``SetDefault`` (settings service) and re-read the value into the cache."""
        self._proxy.SetDefault()
        self._refreshcachedvalue()

    def get_text(self) -> str:
        """``GetText`` of the remote path (a blocking call, not cached)."""
        return self._proxy.GetText()

    @property
    def exists(self) -> bool:
        """True when a blocking ``GetValue`` on the path succeeds."""
        try:
            self._proxy.GetValue()
        except dbus.exceptions.DBusException:
            return False
        return True

    @property
    def eventCallback(self) -> Callable[[str, str, dict[str, Any]], Any] | None:
        """The function called on every value change."""
        return self._eventCallback

    @eventCallback.setter
    def eventCallback(self, callback: Callable[[str, str, dict[str, Any]], Any] | None) -> None:
        self._eventCallback = callback

    def _items_changed_handler(self, items: Any) -> None:
        if not isinstance(items, dict):
            return
        change = items.get(self._path)
        if not isinstance(change, dict) or "Value" not in change:
            return
        text = change["Text"] if "Text" in change else str(unwrap_dbus_value(change["Value"]))
        self._properties_changed_handler({"Value": change["Value"], "Text": text})

    def _properties_changed_handler(self, changes: dict[str, Any]) -> None:
        if "Value" not in changes:
            return
        changes["Value"] = unwrap_dbus_value(changes["Value"])
        self._cachedvalue = changes["Value"]
        if self._eventCallback is None:
            return
        try:
            self._eventCallback(self._serviceName, self._path, changes)
        except BaseException:  # noqa: BLE001 - as velib: any callback error ends the process
            traceback.print_exc()
            os._exit(1)


class VeDbusTreeExport(dbus.service.Object):
    """An intermediate node (e.g. ``/Dc``) answering with the values/texts of its subtree."""

    def __init__(self, bus: dbus.bus.BusConnection, objectPath: str, service: VeDbusService):
        super().__init__(bus, objectPath)
        self._path: str | None = objectPath
        self._service = service

    def _remove(self) -> None:
        if getattr(self, "_path", None) is None:
            return
        self.remove_from_connection()
        self._path = None

    def __del__(self) -> None:
        self._remove()

    def _subtree(self, texts: bool) -> dict[str, Any]:
        prefix = self.__dbus_object_path__
        if not prefix.endswith("/"):
            prefix += "/"
        result: dict[str, Any] = {}
        for path, item in self._service._dbusobjects.items():
            if path.startswith(prefix):
                key = path[len(prefix) :]
                result[key] = item.GetText() if texts else wrap_dbus_value(item.local_get_value())
        return result

    @dbus.service.method(BUSITEM, out_signature="v")
    def GetValue(self) -> Any:
        return dbus.Dictionary(self._subtree(False), signature="sv", variant_level=1)

    @dbus.service.method(BUSITEM, out_signature="v")
    def GetText(self) -> Any:
        return self._subtree(True)

    def local_get_value(self) -> dict[str, Any]:
        return self._subtree(False)


class VeDbusRootExport(VeDbusTreeExport):
    """The ``/`` object: the whole tree, ``GetItems`` and the batched ``ItemsChanged`` signal."""

    @dbus.service.signal(BUSITEM, signature="a{sa{sv}}")
    def ItemsChanged(self, changes: dict[str, dict[str, Any]]) -> None:
        """Emitted with ``{path: {"Value": v, "Text": t}}`` for a batch of changes."""

    @dbus.service.method(BUSITEM, out_signature="a{sa{sv}}")
    def GetItems(self) -> dict[str, dict[str, Any]]:
        return {
            path: {"Value": wrap_dbus_value(item.local_get_value()), "Text": item.GetText()}
            for path, item in self._service._dbusobjects.items()
        }


class VeDbusItemExport(dbus.service.Object):
    """One published value. Subclass it and pass ``itemtype=`` to ``add_path`` to customise
    ``coerce_value``, ``is_equal`` or ``unwrap_value``."""

    def __init__(  # noqa: PLR0917 - velib_python takes these positionally
        self,
        bus: dbus.bus.BusConnection,
        objectPath: str,
        value: Any = None,
        description: str | None = None,
        writeable: bool = False,
        onchangecallback: OnChange | None = None,
        gettextcallback: GetTextCallback | None = None,
        deletecallback: Callable[[str], None] | None = None,
        valuetype: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(bus, objectPath)
        self._path: str | None = objectPath
        self._value = value
        self._description = description
        self._writeable = writeable
        self._onchangecallback = onchangecallback
        self._gettextcallback = gettextcallback
        self._deletecallback = deletecallback
        self._type = valuetype

    def _remove(self) -> None:
        path = getattr(self, "_path", None)
        if path is None:
            return
        self._path = None
        if self._deletecallback is not None:
            self._deletecallback(path)
        self.remove_from_connection()

    def __del__(self) -> None:
        self._remove()

    def local_set_value(self, newvalue: Any) -> None:
        """Set the value from the owning process; emits ``PropertiesChanged`` if it changed."""
        change = self._local_set_value(newvalue)
        if change is not None:
            self.PropertiesChanged(change)

    def _local_set_value(self, newvalue: Any) -> dict[str, Any] | None:
        if self._value == newvalue:
            return None
        self._value = newvalue
        return {"Value": wrap_dbus_value(newvalue), "Text": self.GetText()}

    def local_get_value(self) -> Any:
        return self._value

    def unwrap_value(self, newvalue: Any) -> Any:
        return unwrap_dbus_value(newvalue)

    def coerce_value(self, newvalue: Any) -> Any:
        """Convert a written value with ``valuetype`` (``None`` always passes, to invalidate)."""
        if self._type is None or newvalue is None:
            return newvalue
        return self._type(newvalue)

    def is_equal(self, newvalue: Any) -> bool:
        return bool(newvalue == self._value)

    @dbus.service.method(BUSITEM, in_signature="v", out_signature="i")
    def SetValue(self, newvalue: Any) -> int:
        if not self._writeable:
            return 1
        value = self.unwrap_value(newvalue)
        try:
            value = self.coerce_value(value)
        except (TypeError, ValueError):
            return 1
        if self.is_equal(value):
            return 0
        if self._onchangecallback is not None and not self._onchangecallback(
            self.__dbus_object_path__, value
        ):
            return 2
        self.local_set_value(value)
        return 0

    @dbus.service.method(BUSITEM, in_signature="si", out_signature="s")
    def GetDescription(self, language: str, length: int) -> str:
        if self._description is None:
            return "No description given"
        return self._description

    @dbus.service.method(BUSITEM, out_signature="v")
    def GetValue(self) -> Any:
        return wrap_dbus_value(self._value)

    @dbus.service.method(BUSITEM, out_signature="s")
    def GetText(self) -> str:
        value = self._value
        if value is None:
            return "---"
        if self._gettextcallback is not None:
            return self._gettextcallback(self.__dbus_object_path__, value)
        if isinstance(value, dbus.Byte):
            return str(int(value))
        if self.__dbus_object_path__ == "/ProductId":
            return f"0x{value:X}"
        return str(value)

    @dbus.service.signal(BUSITEM, signature="a{sv}")
    def PropertiesChanged(self, changes: dict[str, Any]) -> None:
        """Emitted with ``{"Value": v, "Text": t}`` when the value changes."""
