"""Validating and writing settings: the one path every change takes (forms and JSON API).

1. every name must be a setting of the schema (key such as ``Superb/ChargeVoltage`` or full
   path); every value is checked with :meth:`driver.schema.Setting.validate` (type, range,
   options, text length, node-ID syntax and uniqueness), and here before that: text must be
   valid Unicode (no lone surrogates), numbers given as text use ASCII digits only, and the
   web server's own settings must be usable (:data:`EXTRA_CHECKS`);
2. the cross-field rules of the schema are checked on the current values with the new ones
   applied (only rules that involve a changed setting, so an old inconsistency elsewhere does
   not block an unrelated change);
All of it runs under one lock (:data:`WRITE_LOCK`), on current values read afresh from the
settings service: two requests can never both pass the rules against the same old values and
together store a state that breaks them.

3. only then are the values that differ from the current ones written, one by one, in an order
   in which every intermediate state keeps the rules (so a driver, which refuses a value that
   breaks a rule, never sees one), and the settings service's answer to each is reported.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from driver.schema import Schema, Setting, SettingValueError

#: one check-then-write at a time (every request thread of the process)
WRITE_LOCK = threading.Lock()

#: ports the GX itself uses (docs/web.md): nginx 80/443, websockify 81, MQTT 1883/8883/9001,
#: Node-RED 1880/1881, Signal K 3000, Modbus TCP 502, VNC 5900
GX_PORTS = frozenset({80, 443, 81, 1883, 8883, 9001, 1880, 1881, 3000, 502, 5900})

_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?", re.ASCII)


def check_listen_address(value: Any) -> None:
    """``Web/ListenAddress``: empty (every interface) or one IPv4/IPv6 address."""
    if value == "":
        return
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        raise SettingValueError(f"Listen address: '{value}' is not an IP address (leave it "
                                "empty for every interface)") from None


def check_port(value: Any) -> None:
    """``Web/Port``: not a port the GX uses itself (the range is the schema's)."""
    if int(value) in GX_PORTS:
        raise SettingValueError(f"Port: {int(value)} is used by the GX itself (not one of "
                                f"{', '.join(map(str, sorted(GX_PORTS)))})")


def check_host_list(value: Any) -> None:
    """``Web/AllowedHosts``: comma separated host names or IP addresses."""
    for item in str(value).split(","):
        part = item.strip()
        if not part:
            continue
        try:
            ipaddress.ip_address(part)
        except ValueError:
            if not _HOST_NAME.fullmatch(part):
                raise SettingValueError(f"Extra host names: '{part}' is not a host name or "
                                        "an IP address") from None


#: checks beyond the schema for settings the web server itself depends on
EXTRA_CHECKS: dict[str, Callable[[Any], None]] = {
    "Web/ListenAddress": check_listen_address,
    "Web/Port": check_port,
    "Web/AllowedHosts": check_host_list,
}


def check_value(setting: Setting, raw: Any) -> Any:
    """:meth:`Setting.validate` plus the web page's own checks; raises SettingValueError."""
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise SettingValueError(f"{setting.label}: not valid text (a lone surrogate)") \
                from None
        if setting.type != "s" and (not raw.isascii() or "_" in raw):
            # Python's float() also reads "٥٥", "５５" and "5_5"
            raise SettingValueError(f"{setting.label}: '{raw}' is not a number (digits 0-9)")
    value = setting.validate(raw)
    extra = EXTRA_CHECKS.get(setting.key)
    if extra is not None:
        extra(value)
    return value


class Backend(Protocol):
    def settings(self) -> dict[str, Any]: ...
    def set_setting(self, setting: Setting, value: Any) -> int: ...
    def settings_available(self) -> bool: ...
    def read_settings(self, paths: Iterable[str]) -> dict[str, Any]: ...


@dataclass
class WriteResult:
    """The outcome of a change request."""

    #: key -> message, for values that failed validation (nothing was written then)
    errors: dict[str, str] = field(default_factory=dict)
    #: cross-field rule messages broken by the request (nothing was written then)
    rule_errors: list[str] = field(default_factory=list)
    #: key -> (value, answer of the settings service) for every value written
    written: dict[str, tuple[Any, int]] = field(default_factory=dict)
    #: keys whose value was already current (not written)
    unchanged: list[str] = field(default_factory=list)
    #: validated values by key (also when nothing was written)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.rule_errors and all(
            answer == 0 for _, answer in self.written.values())

    @property
    def refused(self) -> dict[str, str]:
        """key -> message for values the settings service answered with an error."""
        return {k: f"the settings service refused {v!r} (it answered {a})"
                for k, (v, a) in self.written.items() if a != 0}


def lookup(schema: Schema, name: str) -> Setting | None:
    """The setting named by a key (``Superb/NodeIds``) or a full path."""
    if name.startswith("/"):
        return schema.by_path.get(name)
    return schema.by_key.get(name)


def validate(schema: Schema, current: Mapping[str, Any],
             changes: Mapping[str, Any]) -> WriteResult:
    """Check ``changes`` (name -> raw value) against the schema and the current values."""
    res = WriteResult()
    typed: dict[str, Any] = {}
    for name, raw in changes.items():
        setting = lookup(schema, name)
        if setting is None:
            res.errors[name] = f"unknown setting '{name}'"
            continue
        try:
            value = check_value(setting, raw)
        except SettingValueError as exc:
            res.errors[setting.key] = str(exc)
            continue
        typed[setting.path] = value
        res.values[setting.key] = value
    if res.errors:
        return res
    candidate = dict(schema.defaults())
    candidate.update({p: v for p, v in current.items() if v is not None})
    candidate.update(typed)
    touched = {r for p in typed if current.get(p) != typed[p] for r in schema.rules_touching(p)}
    for rule in schema.rules:
        if rule in touched and not rule.holds(float(candidate[rule.a]), float(candidate[rule.b])):
            res.rule_errors.append(rule.message)
            for p in (rule.a, rule.b):
                if p in typed:
                    res.errors.setdefault(schema.by_path[p].key, rule.message)
    return res


def write_order(schema: Schema, current: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The paths of ``new`` in an order in which each intermediate state keeps the rules.

    Greedy: repeatedly take the first pending change that breaks no rule when applied to the
    state so far; if none does (cannot happen for a valid final state of ``le``/``lt`` chains
    in practice), keep the remaining order.
    """
    state = dict(schema.defaults())
    state.update({p: v for p, v in current.items() if v is not None})
    pending = list(new)
    order: list[str] = []
    while pending:
        for p in pending:
            trial = dict(state)
            trial[p] = new[p]
            if all(r.holds(float(trial[r.a]), float(trial[r.b]))
                   for r in schema.rules_touching(p)):
                break
        else:
            p = pending[0]
        pending.remove(p)
        state[p] = new[p]
        order.append(p)
    return order


def apply_changes(schema: Schema, backend: Backend, changes: Mapping[str, Any],
                  force: bool = False) -> WriteResult:
    """Validate ``changes`` and, only if all is well, write what differs (see module doc).

    ``force`` writes every value even if the cache says it is current (a single explicit
    change or a reset: the cache may lag a change made elsewhere a moment ago).

    Raises :class:`webui.dbus_backend.BackendUnavailable` when the settings service is down:
    nothing was written then (the check comes before the first write).
    """
    from webui.dbus_backend import BackendUnavailable

    with WRITE_LOCK:
        if not backend.settings_available():
            raise BackendUnavailable("the settings service (com.victronenergy.settings) is "
                                     "not running")
        return _apply_locked(schema, backend, changes, force)


def _involved(schema: Schema, changes: Mapping[str, Any]) -> set[str]:
    """The paths of the changed settings and of every setting a rule ties them to."""
    paths = set()
    for name in changes:
        setting = lookup(schema, name)
        if setting is not None:
            paths.add(setting.path)
            for rule in schema.rules_touching(setting.path):
                paths |= {rule.a, rule.b}
    return paths


def _apply_locked(schema: Schema, backend: Backend, changes: Mapping[str, Any],
                  force: bool) -> WriteResult:
    current = backend.settings()
    # The truth is the settings service, not the cache (which lags writes made a moment ago
    # by anyone): read the values this request is judged against afresh.
    current.update(backend.read_settings(_involved(schema, changes)))
    res = validate(schema, current, changes)
    if res.errors or res.rule_errors:
        return res
    to_write: dict[str, Any] = {}
    for key, value in res.values.items():
        setting = schema.by_key[key]
        same = current.get(setting.path) == value and type(current.get(setting.path)) is type(
            value)
        if same and not force:
            res.unchanged.append(key)
        else:
            to_write[setting.path] = value
    for path in write_order(schema, current, to_write):
        setting = schema.by_path[path]
        answer = backend.set_setting(setting, to_write[path])
        res.written[setting.key] = (to_write[path], answer)
    return res
