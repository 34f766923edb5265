"""The settings schema: every CanBridge Venus setting, declared once in ``settings_schema.json``.

Drivers register their settings from it, the web page and the Remote Console pages are built
from it, and every value written by a user is checked against it (type, range, options, node-ID
list syntax, cross-field rules) before it reaches the settings service.

The file is validated when it is loaded. The tests check it against its JSON Schema
(``settings_meta_schema.json``, with ``jsonschema``); every program checks it with the semantic
checks below (types, unique paths, defaults within range, options, rules that hold for the
defaults, ...), which need no third-party package.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "settings_schema.json"
META_SCHEMA_FILE = Path(__file__).resolve().parent / "settings_meta_schema.json"

SettingValue = int | float | str
WIDGETS = ("number", "option", "switch", "text", "nodelist")


class SchemaError(Exception):
    """The schema file itself is invalid; the message names the setting and the problem."""


class SettingValueError(ValueError):
    """A value offered for a setting is not acceptable; the message says why."""


_NODE_LIST_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_node_ids(text: str, lo: int = 1, hi: int = 127) -> list[int]:
    """Parse a node-ID list such as ``"1, 2, 5-7"`` into a sorted list of unique IDs.

    Raises :class:`SettingValueError` on bad syntax, IDs outside ``lo..hi``, duplicates or an
    empty list.
    """
    if not isinstance(text, str):
        raise SettingValueError("node IDs must be text such as '1,2,3' or '1-4'")
    ids: list[int] = []
    parts = [p for p in text.split(",")]
    if not text.strip():
        raise SettingValueError("the node-ID list is empty")
    for part in parts:
        m = _NODE_LIST_RE.match(part)
        if m is None:
            raise SettingValueError(f"'{part.strip()}' is not a node ID or a range like 1-4")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise SettingValueError(f"range '{part.strip()}' runs backwards")
        for n in range(first, last + 1):
            if not lo <= n <= hi:
                raise SettingValueError(f"node ID {n} is outside {lo}-{hi}")
            if n in ids:
                raise SettingValueError(f"node ID {n} appears more than once")
            ids.append(n)
    return sorted(ids)


def format_node_ids(ids: Iterable[int]) -> str:
    """The canonical text of a node-ID list (comma separated, ascending)."""
    return ",".join(str(n) for n in sorted(ids))


@dataclass(frozen=True)
class Option:
    """One choice of an enumerated setting."""

    value: int | str
    label: str


@dataclass(frozen=True)
class Setting:
    """One Venus setting as declared in the schema."""

    path: str
    type: str
    default: SettingValue
    group: str
    widget: str
    label: str
    help: str
    min: float | None = None
    max: float | None = None
    unit: str = ""
    step: float | None = None
    decimals: int | None = None
    options: tuple[Option, ...] = ()
    maxlength: int | None = None
    reconnect: bool = False
    silent: bool = False

    @property
    def key(self) -> str:
        """The path below ``/Settings/CanBridge/``, e.g. ``Superb/NodeIds``."""
        return self.path.split("/Settings/CanBridge/", 1)[1]

    def typed(self, value: Any) -> SettingValue:
        """``value`` converted to this setting's Python type (no range check)."""
        if self.type == "s":
            return str(value)
        if isinstance(value, bool):
            raise SettingValueError(f"{self.label}: true/false is not a number")
        if self.type == "i":
            return int(value)
        return float(value)

    def dbus_default(self) -> SettingValue:
        """The default with the Python type that makes the settings service store this type.

        The settings service fixes a setting's type from the D-Bus type of its default, so an
        ``f`` setting whose default is written ``55`` would silently become an integer forever.
        """
        return self.typed(self.default)

    def dbus_min(self) -> SettingValue:
        """The minimum as registered with the settings service (0 with max 0: unbounded)."""
        if self.type == "s":
            return 0
        return self.typed(self.min if self.min is not None else 0)

    def dbus_max(self) -> SettingValue:
        """The maximum as registered with the settings service."""
        if self.type == "s":
            return 0
        return self.typed(self.max if self.max is not None else 0)

    def validate(self, value: Any) -> SettingValue:
        """Check and convert a value offered for this setting.

        Accepts numbers and numeric strings for numeric settings (as the settings service does),
        refuses booleans, non-finite numbers, fractional values for integer settings, values out
        of range or not among the options, over-long text, and malformed node-ID lists.
        Returns the value with the setting's type.
        """
        if self.type == "s":
            if not isinstance(value, str):
                raise SettingValueError(f"{self.label}: expected text")
            if self.maxlength is not None and len(value) > self.maxlength:
                raise SettingValueError(
                    f"{self.label}: text longer than {self.maxlength} characters"
                )
            if any(ord(c) < 32 for c in value):
                raise SettingValueError(f"{self.label}: control characters are not allowed")
            if self.widget == "nodelist":
                return format_node_ids(parse_node_ids(value))
            return value
        if isinstance(value, bool) or value is None:
            raise SettingValueError(f"{self.label}: expected a number")
        if isinstance(value, str):
            text = value.strip().replace(",", ".") if value.count(",") == 1 else value.strip()
            try:
                num = float(text)
            except ValueError:
                raise SettingValueError(f"{self.label}: '{value}' is not a number") from None
        elif isinstance(value, (int, float)):
            num = float(value)
        else:
            raise SettingValueError(f"{self.label}: expected a number")
        if not math.isfinite(num):
            raise SettingValueError(f"{self.label}: '{value}' is not a finite number")
        typed: int | float
        if self.type == "i":
            if num != int(num):
                raise SettingValueError(f"{self.label}: must be a whole number")
            typed = int(num)
        else:
            typed = num
        if self.min is not None and typed < self.min:
            raise SettingValueError(f"{self.label}: {typed} is below the minimum {self.min:g}")
        if self.max is not None and typed > self.max:
            raise SettingValueError(f"{self.label}: {typed} is above the maximum {self.max:g}")
        if self.options and typed not in {o.value for o in self.options}:
            allowed = ", ".join(f"{o.value} ({o.label})" for o in self.options)
            raise SettingValueError(f"{self.label}: {typed} is not one of {allowed}")
        return typed


@dataclass(frozen=True)
class Group:
    """A page of settings."""

    id: str
    label: str
    help: str


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: ``a < b`` (``lt``) or ``a <= b`` (``le``)."""

    kind: str
    a: str
    b: str
    message: str

    def holds(self, a: float, b: float) -> bool:
        return a < b if self.kind == "lt" else a <= b


class Schema:
    """The parsed, validated settings schema."""

    def __init__(self, prefix: str, groups: list[Group], settings: list[Setting],
                 rules: list[Rule]) -> None:
        self.prefix = prefix
        self.groups = groups
        self.settings = settings
        self.rules = rules
        self.by_path: dict[str, Setting] = {s.path: s for s in settings}
        self.by_key: dict[str, Setting] = {s.key: s for s in settings}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.settings)

    def __len__(self) -> int:
        return len(self.settings)

    def in_group(self, group_id: str) -> list[Setting]:
        """The settings of one page, in schema order."""
        return [s for s in self.settings if s.group == group_id]

    def under(self, *prefixes: str) -> list[Setting]:
        """The settings whose key starts with any of ``prefixes`` (e.g. ``"Superb/"``)."""
        return [s for s in self.settings if s.key.startswith(prefixes)]

    def defaults(self) -> dict[str, SettingValue]:
        """Every setting's default, by path."""
        return {s.path: s.dbus_default() for s in self.settings}

    def rule_violations(self, values: Mapping[str, Any]) -> list[str]:
        """Messages of the cross-field rules that ``values`` (by path) break.

        Rules whose settings are not both in ``values`` are not checked.
        """
        errors = []
        for rule in self.rules:
            if rule.a in values and rule.b in values:
                try:
                    a, b = float(values[rule.a]), float(values[rule.b])
                except (TypeError, ValueError):
                    continue
                if not rule.holds(a, b):
                    errors.append(rule.message)
        return errors

    def rules_touching(self, path: str) -> list[Rule]:
        """The rules that involve ``path``."""
        return [r for r in self.rules if path in (r.a, r.b)]


def _fail(where: str, problem: str) -> SchemaError:
    return SchemaError(f"settings schema: {where}: {problem}")


def _semantic_checks(prefix: str, groups: list[Group], settings: list[Setting],
                     rules: list[Rule]) -> None:
    group_ids = [g.id for g in groups]
    if len(set(group_ids)) != len(group_ids):
        raise _fail("groups", "duplicate group id")
    seen: set[str] = set()
    for s in settings:
        where = s.path
        if s.type not in ("i", "f", "s"):
            raise _fail(where, f"type must be i, f or s, not {s.type!r}")
        if s.widget not in WIDGETS:
            raise _fail(where, f"unknown widget {s.widget!r}")
        if s.widget == "option" and not s.options:
            raise _fail(where, "an option setting needs options")
        if s.type == "s" and s.maxlength is None:
            raise _fail(where, "a text setting needs maxlength")
        if s.path in seen:
            raise _fail(where, "declared more than once")
        seen.add(s.path)
        if not s.path.startswith(prefix + "/"):
            raise _fail(where, f"path is not under {prefix}")
        if s.group not in group_ids:
            raise _fail(where, f"unknown group '{s.group}'")
        if s.type in ("i", "f"):
            if s.min is None or s.max is None:
                raise _fail(where, "numeric setting without min and max")
            if s.min > s.max:
                raise _fail(where, f"min {s.min} is above max {s.max}")
            if s.min == 0 and s.max == 0:
                raise _fail(where, "min = max = 0 means unbounded to the settings service")
            if s.type == "i" and (s.min != int(s.min) or s.max != int(s.max)):
                raise _fail(where, "integer setting with fractional min/max")
        if s.type == "i" and isinstance(s.default, float):
            raise _fail(where, "integer setting with a fractional default")
        if s.type == "s" and not isinstance(s.default, str):
            raise _fail(where, "text setting with a non-text default")
        if s.type != "s" and isinstance(s.default, str):
            raise _fail(where, "numeric setting with a text default")
        for opt in s.options:
            if s.type == "i" and not isinstance(opt.value, int):
                raise _fail(where, f"option {opt.value!r} is not an integer")
        try:
            s.validate(s.default)
        except SettingValueError as exc:
            raise _fail(where, f"default is invalid ({exc})") from None
    for rule in rules:
        for p in (rule.a, rule.b):
            if p not in seen:
                raise _fail(f"rule '{rule.message}'", f"unknown setting {p}")
    by_path = {s.path: s for s in settings}
    for rule in rules:
        a = float(by_path[rule.a].default)
        b = float(by_path[rule.b].default)
        if not rule.holds(a, b):
            raise _fail(f"rule '{rule.message}'", "the defaults break it")


def meta_errors(data: Mapping[str, Any]) -> list[str]:
    """Problems of ``data`` against ``settings_meta_schema.json`` (needs ``jsonschema``).

    Used by the tests and by developers; the drivers rely on :func:`parse_schema`'s own checks,
    so a GX (where ``jsonschema``, which needs a compiled extension, is absent) and every
    process's memory footprint do without it.
    """
    import jsonschema

    meta = json.loads(META_SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(meta)
    out = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "top level"
        if len(err.absolute_path) >= 2 and err.absolute_path[0] == "settings":
            try:
                where = data["settings"][err.absolute_path[1]].get("path", where)
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
        out.append(f"settings schema: {where}: {err.message}")
    return out


def parse_schema(data: Mapping[str, Any]) -> Schema:
    """Build a :class:`Schema` from parsed JSON, validating it (no ``jsonschema`` needed)."""
    try:
        prefix = data["prefix"]
        groups = [Group(g["id"], g["label"], g["help"]) for g in data["groups"]]
        settings = []
        for raw in data["settings"]:
            path = raw.get("path", "?")
            try:
                settings.append(Setting(
                    path=raw["path"], type=raw["type"], default=raw["default"],
                    group=raw["group"], widget=raw["widget"], label=raw["label"],
                    help=raw["help"], min=raw.get("min"), max=raw.get("max"),
                    unit=raw.get("unit", ""), step=raw.get("step"),
                    decimals=raw.get("decimals"),
                    options=tuple(Option(o["value"], o["label"]) for o in raw.get("options", [])),
                    maxlength=raw.get("maxlength"), reconnect=bool(raw.get("reconnect", False)),
                    silent=bool(raw.get("silent", False)),
                ))
            except KeyError as exc:
                raise _fail(path, f"missing field {exc}") from None
        rules = [Rule(r["kind"], r["a"], r["b"], r["message"]) for r in data["rules"]]
    except (KeyError, TypeError) as exc:
        raise _fail("top level", f"malformed ({exc})") from None
    _semantic_checks(prefix, groups, settings, rules)
    return Schema(prefix, groups, settings, rules)


def load_schema(path: Path | str | None = None) -> Schema:
    """Load and validate the schema file (default: the project's ``settings_schema.json``)."""
    file = Path(path) if path is not None else SCHEMA_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"settings schema: cannot read {file}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"settings schema: {file} is not valid JSON: {exc}") from None
    return parse_schema(data)
