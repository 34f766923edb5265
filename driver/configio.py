"""Configuration export and import: every CanBridge setting as one JSON document.

An export (``canbridge-config export``, the web page's *Configuration* page) is::

    {"format": "canbridge-config", "schema_version": 1, "canbridge_version": "0.1.0",
     "venus_version": "v3.60~21", "exported": "2026-12-02T13:40:00Z",
     "settings": {"Superb/CanInterface": "vecan0", "Superb/Bitrate": 250000, ...}}

with every setting of ``settings_schema.json`` by its key (the path below
``/Settings/CanBridge/``), in schema order, with the type the settings service stores.

An import is checked whole before anything is written (:func:`check_document`):

* the document must be a CanBridge export of a schema version this CanBridge knows: a newer
  version is refused; an older one is migrated step by step through :data:`MIGRATIONS` (settings
  renamed by a newer schema are mapped by an explicit table, settings added since take their
  default and say so, settings removed are dropped and say so) or refused with a message
  naming the setting that cannot be carried over;
* no setting may be missing or unknown; each value must have the setting's JSON type (a whole
  number for ``i``, a number for ``f``, text for ``s``) and pass the schema's own checks
  (:meth:`driver.schema.Setting.validate`: range, options, text length, node-ID lists);
* the whole resulting configuration must keep every cross-field rule of the schema.

Then :func:`diff` shows what would change against the settings in force, and
:func:`apply_document` writes only what differs, in an order (:func:`write_order`) in which
every intermediate state keeps the rules — so a driver, which refuses a value that breaks a
rule, never sees one — and rolls back what it wrote if the settings service refuses a value.

Values are written exactly as they appear in the document (a node-ID list ``1-3`` stays
``1-3``): export, reset to defaults, import gives back the same settings, byte for byte.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from driver import __version__
from driver.schema import Schema, Setting, SettingValue, SettingValueError

FORMAT = "canbridge-config"
VENUS_VERSION_FILE = "opt/victronenergy/version"


class SettingsBackend(Protocol):
    """What import and export need from the settings service (the web page's backend and
    :class:`driver.venus.busclient.SettingsClient` both provide it)."""

    def settings_available(self) -> bool: ...
    def settings(self) -> dict[str, Any]: ...
    def set_setting(self, setting: Setting, value: Any) -> int: ...


@dataclass(frozen=True)
class Migration:
    """How a document of schema version ``version - 1`` becomes one of ``version``.

    ``renamed``: old key -> new key (the value is carried over and checked under the new name);
    ``added``: keys new in ``version`` (absent from older documents: they take their default);
    ``removed``: key -> why it went (dropped from the document);
    ``incompatible``: key -> why its old value cannot be carried over (the import is refused
    naming the setting, so the user sets it by hand).
    """

    version: int
    renamed: Mapping[str, str] = field(default_factory=dict)
    added: tuple[str, ...] = ()
    removed: Mapping[str, str] = field(default_factory=dict)
    incompatible: Mapping[str, str] = field(default_factory=dict)


#: Every schema change that an import must understand, by the version it leads to. Schema
#: version 1 is the first one. When a setting is renamed, removed or added, the schema's
#: ``version`` goes up and one entry is added here.
MIGRATIONS: dict[int, Migration] = {
    # the Sunny Island's AC input current limits (shown on the vebus service) and the
    # SuperB driver's poll rate for temperatures and warnings
    2: Migration(version=2, added=("Sma/AcIn1CurrentLimit", "Sma/AcIn2CurrentLimit",
                                   "Superb/MediumPollInterval")),
}


class ImportRefused(Exception):
    """The document cannot be imported; ``errors`` name each setting and problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class Checked:
    """A document that passed every check: the values to put in force, by path."""

    values: dict[str, SettingValue]
    schema_version: int
    notes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One setting that an import changes."""

    setting: Setting
    current: Any
    new: SettingValue

    @property
    def key(self) -> str:
        return self.setting.key


@dataclass
class ApplyResult:
    """What :func:`apply_document` did."""

    written: list[tuple[str, Any, int]] = field(default_factory=list)
    unchanged: int = 0
    refused: str = ""
    rolled_back: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.mismatches


def schema_version(schema_file: Path | str | None = None) -> int:
    """The ``version`` of the settings schema file (the project's by default)."""
    from driver.schema import SCHEMA_FILE

    data = json.loads(Path(schema_file or SCHEMA_FILE).read_text(encoding="utf-8"))
    return int(data["version"])


def venus_version(root: Path | str = "/") -> str | None:
    """The GX's Venus OS version: first line of ``/opt/victronenergy/version`` below ``root``
    (e.g. ``v3.60~21``); ``None`` off a GX."""
    try:
        text = (Path(root) / VENUS_VERSION_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    first = text.splitlines()[0].strip() if text.strip() else ""
    return first or None


def export_document(schema: Schema, current: Mapping[str, Any], *, version: int,
                    venus: str | None, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The export of the settings ``current`` (by path).

    A setting the settings service does not have (``None``) is exported with its default and
    listed under ``"defaults_used"``, so the file is always complete and importable.
    """
    stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    settings: dict[str, Any] = {}
    missing: list[str] = []
    for s in schema:
        value = current.get(s.path)
        if value is None:
            missing.append(s.key)
            value = s.dbus_default()
        settings[s.key] = value
    doc: dict[str, Any] = {"format": FORMAT, "schema_version": version,
                           "canbridge_version": __version__, "venus_version": venus,
                           "exported": stamp, "settings": settings}
    if missing:
        doc["defaults_used"] = missing
    return doc


def dumps(doc: Mapping[str, Any]) -> str:
    """The text of a document as written to a file (UTF-8, one setting per line)."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def parse_text(text: str | bytes) -> Any:
    """Parse a document's text; :class:`ImportRefused` when it is not JSON."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ImportRefused(["the file is not UTF-8 text"]) from None
    except (ValueError, RecursionError) as exc:
        raise ImportRefused([f"the file is not valid JSON ({exc})"]) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _typed(setting: Setting, raw: Any) -> SettingValue:
    """A document's value for ``setting``: its JSON type must match, then the schema checks."""
    if setting.type == "s":
        if not isinstance(raw, str):
            raise SettingValueError(f"expected text, got {_json_type(raw)}")
        setting.validate(raw)  # node-ID lists are checked but kept as written
        return raw
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise SettingValueError(f"expected a number, got {_json_type(raw)}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise SettingValueError(f"{raw!r} is not a finite number")
    if isinstance(raw, int) and abs(raw) > 2**53:
        raise SettingValueError("the number is too large")
    if setting.type == "i" and isinstance(raw, float) and raw != int(raw):
        raise SettingValueError(f"expected a whole number, got {raw!r}")
    return setting.validate(raw)


def _json_type(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, str):
        return f"text {raw!r}" if len(raw) <= 40 else "text"
    if isinstance(raw, (list, dict)):
        return "a list" if isinstance(raw, list) else "an object"
    return type(raw).__name__


def migrate(settings: dict[str, Any], from_version: int, to_version: int,
            migrations: Mapping[int, Migration]) -> tuple[dict[str, Any], list[str]]:
    """Carry a document's settings from ``from_version`` to ``to_version`` (see
    :class:`Migration`). Returns the settings and notes; :class:`ImportRefused` naming each
    setting that cannot be carried over."""
    notes: list[str] = []
    errors: list[str] = []
    out = dict(settings)
    for version in range(from_version + 1, to_version + 1):
        step = migrations.get(version)
        if step is None:
            raise ImportRefused([f"the file has settings schema version {from_version}; this "
                                 f"CanBridge (schema version {to_version}) cannot migrate it "
                                 f"(no migration to version {version})"])
        for key, why in step.incompatible.items():
            if key in out:
                errors.append(f"{key}: cannot be carried over from schema version "
                              f"{version - 1}: {why}; set it by hand after importing a file "
                              "without it")
        for old, new in step.renamed.items():
            if old in out:
                if new in out:
                    errors.append(f"{old}: renamed to {new} in schema version {version}, but "
                                  f"the file has both")
                    continue
                out[new] = out.pop(old)
                notes.append(f"{old} is called {new} since schema version {version}")
        for key, why in step.removed.items():
            if key in out:
                del out[key]
                notes.append(f"{key} was removed in schema version {version} ({why}); "
                             "its value is not imported")
        for key in step.added:
            if key not in out:
                out[key] = None  # default, filled in by check_document
                notes.append(f"{key} is new in schema version {version}: it gets its default")
    if errors:
        raise ImportRefused(errors)
    return out, notes


def check_document(schema: Schema, doc: Any, *, version: int,
                   migrations: Mapping[int, Migration] | None = None) -> Checked:
    """Validate a parsed document whole against ``schema`` (version ``version``).

    Returns the values to put in force (by path, typed); raises :class:`ImportRefused` with
    every problem found (nothing may be written then).
    """
    migs = MIGRATIONS if migrations is None else migrations
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImportRefused(["this is not a CanBridge configuration export (its \"format\" "
                             f"must be \"{FORMAT}\")"])
    file_version = doc.get("schema_version")
    if isinstance(file_version, bool) or not isinstance(file_version, int):
        raise ImportRefused(["the file has no settings schema version (\"schema_version\")"])
    if file_version > version:
        raise ImportRefused([f"the file was exported by a newer CanBridge (settings schema "
                             f"version {file_version}); this one knows version {version}: "
                             "update CanBridge first"])
    raw = doc.get("settings")
    if not isinstance(raw, dict):
        raise ImportRefused(["the file has no \"settings\" object"])
    notes: list[str] = []
    if file_version < version:
        raw, notes = migrate(raw, file_version, version, migs)
        notes.insert(0, f"migrated from settings schema version {file_version} to {version}")
    errors: list[str] = []
    values: dict[str, SettingValue] = {}
    for key in raw:
        if key not in schema.by_key:
            errors.append(f"{key}: unknown setting (not in settings schema version {version})")
    for s in schema:
        if s.key not in raw:
            errors.append(f"{s.key}: missing from the file")
            continue
        if raw[s.key] is None and file_version < version:
            values[s.path] = s.dbus_default()
            continue
        try:
            values[s.path] = _typed(s, raw[s.key])
        except SettingValueError as exc:
            msg = str(exc)
            if msg.startswith(s.label + ": "):
                msg = msg[len(s.label) + 2:]
            errors.append(f"{s.key}: {msg}")
    if not errors:
        for rule in schema.rules:
            if not rule.holds(float(values[rule.a]), float(values[rule.b])):
                errors.append(f"{schema.by_path[rule.a].key} / {schema.by_path[rule.b].key}: "
                              f"{rule.message} ({values[rule.a]} and {values[rule.b]})")
    if errors:
        raise ImportRefused(errors)
    return Checked(values, file_version, notes, doc)


def _same(current: Any, new: Any) -> bool:
    return current == new and type(current) is type(new)


def diff(schema: Schema, current: Mapping[str, Any], checked: Checked) -> list[Change]:
    """The settings whose value (or stored type) differs from the one in force, schema order."""
    return [Change(s, current.get(s.path), checked.values[s.path]) for s in schema
            if not _same(current.get(s.path), checked.values[s.path])]


def fingerprint(schema: Schema, current: Mapping[str, Any]) -> str:
    """A short digest of the settings in force, so a confirmation applies the diff the user saw
    (if anything changed since, the import is shown again instead of written)."""
    text = json.dumps([[s.path, current.get(s.path), type(current.get(s.path)).__name__]
                       for s in schema])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _violations(schema: Schema, state: Mapping[str, Any], paths: set[str]) -> set[Any]:
    broken = set()
    for rule in schema.rules:
        if rule.a in paths or rule.b in paths:
            try:
                a, b = float(state[rule.a]), float(state[rule.b])
            except (KeyError, TypeError, ValueError):
                continue
            if not rule.holds(a, b):
                broken.add(rule)
    return broken


def write_order(schema: Schema, current: Mapping[str, Any],
                new: Mapping[str, SettingValue]) -> list[str]:
    """The paths of ``new`` in an order in which no write breaks a rule that holds.

    Greedy: take the first pending write that breaks no rule that holds in the state so far.
    The rules are ``a < b`` / ``a <= b`` over an acyclic set of settings, and the final state
    keeps them all, so such a write always exists: a write moving ``x`` up is blocked only by a
    setting above it that must move up too, and following that chain ends at one that is free
    (likewise downwards). Raises :class:`ImportRefused` if it is ever stuck (a schema whose
    rules form a cycle), so nothing is written in an unsafe order.
    """
    state: dict[str, Any] = dict(schema.defaults())
    state.update({p: v for p, v in current.items() if v is not None})
    rule_paths = {p for r in schema.rules for p in (r.a, r.b)}
    pending = list(new)
    order: list[str] = []
    while pending:
        for p in pending:
            if p not in rule_paths:
                break
            before = _violations(schema, state, {p})
            trial = dict(state)
            trial[p] = new[p]
            if not (_violations(schema, trial, {p}) - before):
                break
        else:
            raise ImportRefused(["no order of writes keeps every cross-field rule: "
                                 + ", ".join(schema.by_path[p].key for p in pending)])
        pending.remove(p)
        state[p] = new[p]
        order.append(p)
    return order


def apply_document(schema: Schema, backend: SettingsBackend, checked: Checked,
                   expect: str | None = None,
                   progress: Callable[[str], None] | None = None) -> ApplyResult:
    """Write what differs between ``checked`` and the settings in force (see module doc).

    ``expect``: the :func:`fingerprint` of the settings the user saw the diff against; if they
    changed meanwhile, :class:`ImportRefused` and nothing is written. If the settings service
    refuses a value, the values written so far are put back (in reverse order, which keeps the
    rules too) and ``refused`` says which. Afterwards every value is read back and compared.
    """
    if not backend.settings_available():
        raise ImportRefused(["the settings service (com.victronenergy.settings) is not "
                             "running; nothing was written"])
    current = backend.settings()
    if expect is not None and fingerprint(schema, current) != expect:
        raise ImportRefused(["the settings changed since the differences were shown; review "
                             "them again; nothing was written"])
    res = ApplyResult()
    changes = {c.setting.path: c.new for c in diff(schema, current, checked)}
    res.unchanged = len(schema) - len(changes)
    order = write_order(schema, current, changes)
    for path in order:
        setting = schema.by_path[path]
        answer = backend.set_setting(setting, changes[path])
        res.written.append((setting.key, changes[path], answer))
        if progress is not None:
            progress(f"{setting.key} = {changes[path]!r}: answer {answer}")
        if answer != 0:
            res.refused = (f"{setting.key}: the settings service refused {changes[path]!r} "
                           f"(it answered {answer})")
            for key, _value, ans in reversed(res.written[:-1]):
                s = schema.by_key[key]
                old = current.get(s.path)
                if ans == 0 and old is not None:
                    backend.set_setting(s, old)
                    res.rolled_back.append(key)
            return res
    after = backend.settings()
    for path, value in checked.values.items():
        if not _same(after.get(path), value):
            res.mismatches.append(f"{schema.by_path[path].key}: {after.get(path)!r} in force, "
                                  f"{value!r} imported")
    return res


def read_document(path: Path | str) -> Any:
    """Read and parse a document file (``-`` is standard input)."""
    import sys

    if str(path) == "-":
        return parse_text(sys.stdin.buffer.read())
    try:
        return parse_text(Path(path).read_bytes())
    except OSError as exc:
        raise ImportRefused([f"cannot read {path}: {exc.strerror}"]) from None


# -- command line ---------------------------------------------------------------------------------

def format_value(setting: Setting, value: Any) -> str:
    """A value as shown in a diff (``—`` when the settings service has none)."""
    if value is None:
        return "—"
    if setting.options:
        for o in setting.options:
            if o.value == value:
                return f"{value} ({o.label})"
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return f"{text} {setting.unit}".rstrip()


def format_diff(changes: list[Change]) -> str:
    """The diff as text, one setting a line."""
    if not changes:
        return "no differences: the file matches the settings in force\n"
    lines = [f"{c.key}: {format_value(c.setting, c.current)} -> "
             f"{format_value(c.setting, c.new)}" for c in changes]
    return "\n".join(lines) + f"\n{len(changes)} setting(s) differ\n"


def main(argv: list[str] | None = None) -> int:
    """``canbridge-config export|import|diff FILE``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="canbridge-config",
        description="Export, compare and import the CanBridge settings as one JSON file.")
    ap.add_argument("command", choices=("export", "import", "diff"))
    ap.add_argument("file", help="the JSON file ('-': standard output / input)")
    ap.add_argument("--yes", action="store_true",
                    help="import without asking (the differences are still printed)")
    ap.add_argument("--address", help="D-Bus address (default: $DBUS_SESSION_BUS_ADDRESS, "
                                      "else the system bus as on a GX)")
    ap.add_argument("--venus-root", default="/",
                    help="where /opt/victronenergy/version is looked for (default /)")
    ap.add_argument("--schema", help="settings schema file (default: the installed one)")
    args = ap.parse_args(argv)

    from driver.schema import SchemaError, load_schema
    from driver.venus.busclient import BusUnavailable, SettingsClient

    out, err = sys.stdout, sys.stderr
    try:
        schema = load_schema(args.schema)
        version = schema_version(args.schema)
    except SchemaError as exc:
        err.write(f"{exc}\n")
        return 2
    try:
        client = SettingsClient(schema, args.address)
    except BusUnavailable as exc:
        err.write(f"canbridge-config: {exc}\n")
        return 3
    try:
        if not client.settings_available():
            err.write("canbridge-config: the settings service (com.victronenergy.settings) is "
                      "not running; nothing was read or written\n")
            return 3
        if args.command == "export":
            doc = export_document(schema, client.settings(), version=version,
                                  venus=venus_version(args.venus_root))
            text = dumps(doc)
            if args.file == "-":
                out.write(text)
            else:
                tmp = Path(args.file + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(args.file)
                err.write(f"exported {len(doc['settings'])} settings to {args.file}\n")
            return 0
        try:
            checked = check_document(schema, read_document(args.file), version=version)
        except ImportRefused as exc:
            err.write("canbridge-config: the file cannot be imported; nothing was written:\n")
            for e in exc.errors:
                err.write(f"  {e}\n")
            return 1
        for note in checked.notes:
            err.write(f"note: {note}\n")
        # register first (as the drivers do; existing values are kept) so every setting can
        # be compared and written even before the drivers ever ran
        client.register()
        current = client.settings()
        changes = diff(schema, current, checked)
        out.write(format_diff(changes))
        out.flush()
        if args.command == "diff" or not changes:
            return 0
        if not args.yes:
            if not sys.stdin.isatty() or args.file == "-":
                err.write("canbridge-config: not applied: confirm with --yes (or run it on a "
                          "terminal to be asked)\n")
                return 1
            answer = input(f"Apply these {len(changes)} change(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                err.write("not applied; nothing was written\n")
                return 1
        try:
            res = apply_document(schema, client, checked,
                                 expect=fingerprint(schema, current))
        except ImportRefused as exc:
            err.write("canbridge-config: " + "; ".join(exc.errors) + "\n")
            return 1
        if res.refused:
            err.write(f"canbridge-config: {res.refused}; put back: "
                      f"{', '.join(res.rolled_back) or 'nothing'}\n")
            return 1
        if res.mismatches:
            err.write("canbridge-config: after the import these differ: "
                      + "; ".join(res.mismatches) + "\n")
            return 1
        err.write(f"imported: {len(res.written)} setting(s) written, {res.unchanged} "
                  "unchanged\n")
        return 0
    except BusUnavailable as exc:
        err.write(f"canbridge-config: {exc}\n")
        return 3
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
