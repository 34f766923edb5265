"""Value conversion and small helpers, a clean-room stand-in for velib_python's ``ve_utils``.

Only the helpers the other stand-in modules and the CanBridge drivers use are provided:

* :func:`wrap_dbus_value` / :func:`unwrap_dbus_value` convert between plain Python values and
  the D-Bus types of the ``com.victronenergy.BusItem`` protocol. ``None`` (invalid) travels as
  an empty array of signed 32-bit integers (``ai``).
* :func:`exit_on_error` runs a callable and ends the whole process on any exception, which is
  what Venus code wraps GLib callbacks in (GLib would otherwise swallow the error).
* :func:`add_name_owner_changed_receiver` subscribes to ``NameOwnerChanged``, filtered on a
  name space where the bus supports ``arg0namespace``.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from typing import Any

import dbus

logger = logging.getLogger(__name__)

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1

#: The wire form of an invalid value: an empty ``ai`` array inside a variant.
VEDBUS_INVALID = dbus.Array([], signature=dbus.Signature("i"), variant_level=1)

_DBUS_INTEGERS = (
    dbus.Byte,
    dbus.Int16,
    dbus.UInt16,
    dbus.Int32,
    dbus.UInt32,
    dbus.Int64,
    dbus.UInt64,
)


def wrap_dbus_value(value: Any) -> Any:
    """Turn a Python value into the D-Bus value sent inside a variant.

    ``None`` becomes the invalid marker (empty ``ai``); ``bool`` a Boolean; other integers an
    Int32 when they fit, else an Int64; ``float`` a Double; ``str`` a String; lists and dicts
    are converted element by element (an empty list becomes an empty ``au`` so that it cannot
    be mistaken for the invalid marker). A dict whose values are lists or dicts raises
    ``TypeError``, as in velib_python. Anything else is passed through untouched.
    """
    if value is None:
        return dbus.Array([], signature=dbus.Signature("i"), variant_level=1)
    if isinstance(value, float):
        return dbus.Double(value, variant_level=1)
    if isinstance(value, bool):
        return dbus.Boolean(value, variant_level=1)
    if isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            return dbus.Int32(value, variant_level=1)
        return dbus.Int64(value, variant_level=1)
    if isinstance(value, str):
        return dbus.String(value, variant_level=1)
    if isinstance(value, list):
        if not value:
            return dbus.Array([], signature=dbus.Signature("u"), variant_level=1)
        return dbus.Array([wrap_dbus_value(v) for v in value], variant_level=1)
    if isinstance(value, dict):
        # Keys are left as they are: wrapping them in variants is not valid for a dict key.
        wrapped = {key: wrap_dbus_value(item) for key, item in value.items()}
        for item in wrapped.values():
            # velib_python builds the pairs through a set, so a list or dict VALUE inside a dict
            # raises TypeError there; do the same so such code fails off the GX too.
            hash(item)
        return dbus.Dictionary(wrapped, variant_level=1)
    return value


def unwrap_dbus_value(val: Any) -> Any:
    """Turn a received D-Bus value back into a plain Python value.

    Every D-Bus integer type becomes ``int``, Double ``float``, String and Signature ``str``,
    Boolean ``bool``; arrays become lists, except that ANY empty array becomes ``None`` (the
    invalid marker); structs become lists; dictionaries keep their keys and convert values.
    """
    if isinstance(val, _DBUS_INTEGERS):
        return int(val)
    if isinstance(val, dbus.Double):
        return float(val)
    if isinstance(val, dbus.Array):
        items = [unwrap_dbus_value(v) for v in val]
        return items if items else None
    if isinstance(val, (dbus.String, dbus.Signature)):
        return str(val)
    if isinstance(val, dbus.ByteArray):
        return bytes(val).decode("latin-1")
    if isinstance(val, (list, tuple)):
        return [unwrap_dbus_value(v) for v in val]
    if isinstance(val, dict):
        return {key: unwrap_dbus_value(item) for key, item in val.items()}
    if isinstance(val, dbus.Boolean):
        return bool(val)
    return val


def exit_on_error(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; on any exception print the traceback and end the process with code 1.

    Meant for callbacks run by GLib (``GLib.idle_add(exit_on_error, f, ...)``), where an
    exception would otherwise be logged and forgotten while the program limps on.
    """
    try:
        return func(*args, **kwargs)
    except BaseException:  # noqa: BLE001 - velib exits on any callback error
        try:
            print("exit_on_error: unexpected exception, terminating", flush=True)
            traceback.print_exc()
        finally:
            os._exit(1)


def add_name_owner_changed_receiver(
    bus: dbus.bus.BusConnection,
    name_owner_changed: Callable[[str, str, str], Any],
    namespace: str | None = "com.victronenergy",
) -> Any:
    """Subscribe ``name_owner_changed(name, old_owner, new_owner)`` to ``NameOwnerChanged``.

    With a ``namespace`` the match is narrowed with ``arg0namespace`` when dbus-python supports
    that keyword; otherwise every owner change is delivered.
    """
    if namespace is not None:
        try:
            return bus.add_signal_receiver(
                name_owner_changed, signal_name="NameOwnerChanged", arg0namespace=namespace
            )
        except TypeError:
            pass
    return bus.add_signal_receiver(name_owner_changed, signal_name="NameOwnerChanged")
