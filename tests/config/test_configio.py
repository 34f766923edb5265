"""Configuration export/import, pure part: documents, validation, migration, diff, write order.

Expected values are written by hand from settings_schema.json's documented ranges and rules
(float <= absorption, re-bulk < float, ...), never computed with the schema the code uses; the
migration tests use a small schema of their own with their own rename table.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from driver import configio
from driver.schema import load_schema, parse_schema

SCHEMA = load_schema()
VERSION = 1


def current_defaults() -> dict[str, Any]:
    return {s.path: s.dbus_default() for s in SCHEMA}


def export(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return configio.export_document(SCHEMA, values or current_defaults(), version=VERSION,
                                    venus="v3.60~21",
                                    now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))


def errors_of(doc: Any) -> list[str]:
    with pytest.raises(configio.ImportRefused) as info:
        configio.check_document(SCHEMA, doc, version=VERSION)
    return info.value.errors


def test_export_has_every_setting_and_the_versions(tmp_path: Path) -> None:
    (tmp_path / "opt/victronenergy").mkdir(parents=True)
    (tmp_path / "opt/victronenergy/version").write_text("v3.60~21\n20250513150214\n")
    assert configio.venus_version(tmp_path) == "v3.60~21"
    assert configio.venus_version(tmp_path / "nowhere") is None
    doc = configio.export_document(SCHEMA, current_defaults(), version=1,
                                   venus=configio.venus_version(tmp_path),
                                   now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert doc["format"] == "canbridge-config"
    assert doc["schema_version"] == 1
    assert doc["canbridge_version"] == "0.1.0"
    assert doc["venus_version"] == "v3.60~21"
    assert doc["exported"] == "2026-01-02T03:04:05Z"
    s = doc["settings"]
    # a few by hand, with the type the settings service stores
    assert s["Superb/CanInterface"] == "auto"
    assert s["Superb/Bitrate"] == 250000 and isinstance(s["Superb/Bitrate"], int)
    assert s["Superb/ChargeVoltage"] == 14.2
    assert s["Sma/FloatVoltage"] == 54.0 and isinstance(s["Sma/FloatVoltage"], float)
    assert s["General/LogLevel"] == 1
    assert len(s) == len(SCHEMA)
    # the schema's settings file version is what the export carries
    assert configio.schema_version() == json.loads(
        (Path(__file__).resolve().parents[2] / "settings_schema.json").read_text())["version"]
    # text as written to a file parses back to the same document
    assert json.loads(configio.dumps(doc)) == doc


def test_export_of_a_missing_setting_uses_its_default_and_says_so() -> None:
    values = current_defaults()
    del values["/Settings/CanBridge/Sma/TaperBand"]
    doc = export(values)
    assert doc["settings"]["Sma/TaperBand"] == 0.4
    assert doc["defaults_used"] == ["Sma/TaperBand"]


def test_a_valid_document_is_accepted_with_values_kept_as_written() -> None:
    doc = export()
    doc["settings"]["Superb/NodeIds"] = "1-3, 7"
    doc["settings"]["Sma/AbsorptionVoltage"] = 57  # a whole number for a float setting
    checked = configio.check_document(SCHEMA, doc, version=VERSION)
    # node-ID lists are checked but written as the file has them (byte-identical round trip)
    assert checked.values["/Settings/CanBridge/Superb/NodeIds"] == "1-3, 7"
    value = checked.values["/Settings/CanBridge/Sma/AbsorptionVoltage"]
    assert value == 57.0 and isinstance(value, float)


def test_every_problem_is_reported_naming_the_setting() -> None:
    doc = export()
    doc["settings"]["Superb/ChargeVoltage"] = 75.0          # max 60
    doc["settings"]["Superb/Bitrate"] = 300000              # not an option
    doc["settings"]["Superb/Mode"] = "1"                    # text for a number
    doc["settings"]["Superb/OfflineAfterTimeouts"] = 2.5    # integer setting
    doc["settings"]["Superb/NodeIds"] = "1,1"               # duplicate
    doc["settings"]["Sma/Phases"] = True                    # boolean
    doc["settings"]["Superb/CanInterface"] = 5              # number for text
    doc["settings"]["Superb/Frobnicate"] = 1                # unknown
    del doc["settings"]["Web/Port"]                          # missing
    errs = errors_of(doc)
    text = "\n".join(errs)
    assert "Superb/ChargeVoltage: 75.0 is above the maximum 60" in text
    assert "Superb/Bitrate: 300000 is not one of" in text
    assert "Superb/Mode: expected a number, got text '1'" in text
    assert "Superb/OfflineAfterTimeouts: expected a whole number, got 2.5" in text
    assert "Superb/NodeIds: node ID 1 appears more than once" in text
    assert "Sma/Phases: expected a number, got true/false" in text
    assert "Superb/CanInterface: expected text, got int" in text
    assert "Superb/Frobnicate: unknown setting" in text
    assert "Web/Port: missing from the file" in text
    assert len(errs) == 9


def test_cross_field_rules_are_checked_on_the_whole_file() -> None:
    doc = export()
    doc["settings"]["Sma/FloatVoltage"] = 57.0   # absorption stays 56.8: float above it
    errs = errors_of(doc)
    assert errs == ["Sma/FloatVoltage / Sma/AbsorptionVoltage: float voltage must not be above "
                    "absorption voltage (57.0 and 56.8)"]
    doc["settings"]["Sma/AbsorptionVoltage"] = 57.0  # equal is allowed (<=)
    configio.check_document(SCHEMA, doc, version=VERSION)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.update(format="something-else"), "not a CanBridge configuration export"),
    (lambda d: d.pop("schema_version"), "no settings schema version"),
    (lambda d: d.update(schema_version=3), "newer CanBridge (settings schema version 3)"),
    (lambda d: d.update(schema_version=0), "no migration to version 1"),
    (lambda d: d.update(settings=[1, 2]), "no \"settings\" object"),
])
def test_document_level_refusals(mutate: Any, expected: str) -> None:
    doc = export()
    mutate(doc)
    assert expected in errors_of(doc)[0]


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(configio.ImportRefused, match="not valid JSON"):
        configio.parse_text(b"{\"format\": ")
    with pytest.raises(configio.ImportRefused, match="not valid JSON"):
        configio.parse_text(b"{\"x\": NaN}")
    with pytest.raises(configio.ImportRefused, match="not UTF-8"):
        configio.parse_text(b"\xff\xfe")
    doc = export()
    doc["settings"]["Superb/ChargeVoltage"] = 1e999  # parses as infinity
    assert "not a finite number" in errors_of(doc)[0]


# -- migration: a schema of the test's own, version 2, renamed one setting ---------------------

def mini_schema(version_key: str) -> Any:
    return parse_schema({
        "prefix": "/Settings/CanBridge",
        "groups": [{"id": "g", "label": "G", "help": ""}],
        "settings": [
            {"path": f"/Settings/CanBridge/Sma/{version_key}", "type": "f", "default": 54.0,
             "min": 41.0, "max": 63.0, "group": "g", "widget": "number", "label": "Float",
             "help": ""},
            {"path": "/Settings/CanBridge/Sma/Absorption", "type": "f", "default": 56.0,
             "min": 41.0, "max": 63.0, "group": "g", "widget": "number", "label": "Abs",
             "help": ""},
            {"path": "/Settings/CanBridge/Sma/NewThing", "type": "i", "default": 3,
             "min": 0, "max": 9, "group": "g", "widget": "number", "label": "New",
             "help": ""},
        ],
        "rules": [{"kind": "le", "a": f"/Settings/CanBridge/Sma/{version_key}",
                   "b": "/Settings/CanBridge/Sma/Absorption", "message": "float <= abs"}],
    })


V1_DOC = {"format": "canbridge-config", "schema_version": 1,
          "settings": {"Sma/FloatV": 53.5, "Sma/Absorption": 55.0, "Sma/Gone": 7}}
MIGRATIONS = {2: configio.Migration(version=2, renamed={"Sma/FloatV": "Sma/FloatVoltage"},
                                    added=("Sma/NewThing",),
                                    removed={"Sma/Gone": "no longer needed"})}


def test_an_older_document_is_migrated_by_the_rename_table() -> None:
    v2 = mini_schema("FloatVoltage")
    checked = configio.check_document(v2, copy.deepcopy(V1_DOC), version=2,
                                      migrations=MIGRATIONS)
    assert checked.values == {"/Settings/CanBridge/Sma/FloatVoltage": 53.5,
                              "/Settings/CanBridge/Sma/Absorption": 55.0,
                              "/Settings/CanBridge/Sma/NewThing": 3}
    notes = "\n".join(checked.notes)
    assert "Sma/FloatV is called Sma/FloatVoltage since schema version 2" in notes
    assert "Sma/NewThing is new in schema version 2" in notes
    assert "Sma/Gone was removed in schema version 2" in notes


def test_an_older_document_is_refused_naming_the_setting_it_cannot_carry() -> None:
    v2 = mini_schema("FloatVoltage")
    migs = {2: configio.Migration(version=2, renamed={"Sma/FloatV": "Sma/FloatVoltage"},
                                  added=("Sma/NewThing",),
                                  incompatible={"Sma/Gone": "its unit changed from V to mV"})}
    with pytest.raises(configio.ImportRefused) as info:
        configio.check_document(v2, copy.deepcopy(V1_DOC), version=2, migrations=migs)
    assert info.value.errors == [
        "Sma/Gone: cannot be carried over from schema version 1: its unit changed from V to "
        "mV; set it by hand after importing a file without it"]
    # without a rename table entry the old name is simply unknown (and the new one missing)
    with pytest.raises(configio.ImportRefused) as info:
        configio.check_document(v2, copy.deepcopy(V1_DOC), version=2,
                                migrations={2: configio.Migration(version=2,
                                                                  added=("Sma/NewThing",))})
    assert "Sma/FloatV: unknown setting (not in settings schema version 2)" in info.value.errors
    assert "Sma/FloatVoltage: missing from the file" in info.value.errors
    # the migrated values still meet the rules of the new schema
    bad = copy.deepcopy(V1_DOC)
    bad["settings"]["Sma/FloatV"] = 55.5
    with pytest.raises(configio.ImportRefused, match="float <= abs"):
        configio.check_document(v2, bad, version=2, migrations=MIGRATIONS)


def test_an_export_of_schema_version_1_imports_with_the_settings_added_since() -> None:
    """Version 2 added three settings (written out here, not read from the migration table):
    a file exported by a CanBridge of version 1 still imports, those three at their default."""
    added = {"Sma/AcIn1CurrentLimit": 50.0, "Sma/AcIn2CurrentLimit": 50.0,
             "Superb/MediumPollInterval": 5.0}
    doc = export()
    doc["schema_version"] = 1
    for key in added:
        del doc["settings"][key]
    doc["settings"]["Superb/PollInterval"] = 2.0
    checked = configio.check_document(SCHEMA, doc, version=configio.schema_version())
    for key, default in added.items():
        assert checked.values[f"/Settings/CanBridge/{key}"] == default
        assert f"{key} is new in schema version 2" in "\n".join(checked.notes)
    assert checked.values["/Settings/CanBridge/Superb/PollInterval"] == 2.0


# -- diff and write order ---------------------------------------------------------------------

P = "/Settings/CanBridge/Sma/"


def holds_by_hand(state: dict[str, Any]) -> bool:
    """The Sunny Island voltage chain, written out from the schema's rule messages."""
    return (state[P + "FloatVoltage"] <= state[P + "AbsorptionVoltage"]
            and state[P + "RebulkVoltage"] < state[P + "FloatVoltage"]
            and state[P + "DischargeVoltage"] < state[P + "RebulkVoltage"])


@pytest.mark.parametrize("target", [
    # all four up past each other's old values (48 V -> higher band)
    {"AbsorptionVoltage": 60.0, "FloatVoltage": 58.0, "RebulkVoltage": 57.0,
     "DischargeVoltage": 47.0},
    # all down below each other's old values
    {"AbsorptionVoltage": 51.0, "FloatVoltage": 50.0, "RebulkVoltage": 49.0,
     "DischargeVoltage": 42.0},
    # mixed: absorption down, float up to meet it, re-bulk up above old float
    {"AbsorptionVoltage": 55.0, "FloatVoltage": 55.0, "RebulkVoltage": 54.5,
     "DischargeVoltage": 45.0},
])
def test_write_order_keeps_every_rule_at_every_step(target: dict[str, float]) -> None:
    current = current_defaults()  # 56.8 / 54.0 / 52.0 / 44.8
    new = {P + k: v for k, v in reversed(list(target.items()))}  # worst order offered
    order = configio.write_order(SCHEMA, current, new)
    assert sorted(order) == sorted(new)
    state = dict(current)
    assert holds_by_hand(state)
    for path in order:
        state[path] = new[path]
        assert holds_by_hand(state), (path, order)


def test_diff_lists_only_what_differs_including_the_stored_type() -> None:
    current = current_defaults()
    current[P + "TaperBand"] = 1  # stored as an integer by someone: differs from 1.0
    doc = export()
    doc["settings"]["Sma/TaperBand"] = 1.0
    doc["settings"]["Superb/NodeIds"] = "1,2"
    checked = configio.check_document(SCHEMA, doc, version=VERSION)
    changes = configio.diff(SCHEMA, current, checked)
    assert [(c.key, c.current, c.new) for c in changes] == [
        ("Superb/NodeIds", "1", "1,2"), ("Sma/TaperBand", 1, 1.0)]
    text = configio.format_diff(changes)
    assert 'Superb/NodeIds: "1" -> "1,2"' in text
    assert "2 setting(s) differ" in text


class FakeSettings:
    """A settings service stand-in for the apply logic: refuses one path if asked."""

    def __init__(self, values: dict[str, Any], refuse: str | None = None) -> None:
        self.values = dict(values)
        self.refuse = refuse
        self.log: list[tuple[str, Any]] = []

    def settings_available(self) -> bool:
        return True

    def settings(self) -> dict[str, Any]:
        return dict(self.values)

    def set_setting(self, setting: Any, value: Any) -> int:
        self.log.append((setting.path, value))
        if setting.path == self.refuse:
            return -1
        self.values[setting.path] = value
        return 0


def test_apply_writes_only_changes_and_rolls_back_on_a_refusal() -> None:
    doc = export()
    doc["settings"].update({"Sma/AbsorptionVoltage": 58.0, "Sma/FloatVoltage": 57.0,
                            "Superb/NodeIds": "2"})
    checked = configio.check_document(SCHEMA, doc, version=VERSION)
    fake = FakeSettings(current_defaults())
    res = configio.apply_document(SCHEMA, fake, checked)
    assert res.ok and res.unchanged == len(SCHEMA) - 3
    assert [p for p, _ in fake.log].index(P + "AbsorptionVoltage") < [
        p for p, _ in fake.log].index(P + "FloatVoltage")
    # the settings changed since the diff was shown: nothing written
    fp = configio.fingerprint(SCHEMA, current_defaults())
    fake2 = FakeSettings(current_defaults())
    fake2.values[P + "TaperBand"] = 0.5
    with pytest.raises(configio.ImportRefused, match="changed since"):
        configio.apply_document(SCHEMA, fake2, checked, expect=fp)
    assert fake2.log == []
    # the settings service refuses the second write: the first is put back
    fake3 = FakeSettings(current_defaults(), refuse=P + "FloatVoltage")
    res = configio.apply_document(SCHEMA, fake3, checked)
    assert not res.ok and "Sma/FloatVoltage: the settings service refused 57.0" in res.refused
    assert fake3.values == current_defaults()


def test_an_import_repairs_settings_that_break_a_rule_today() -> None:
    """The settings service can hold an inconsistent pair (written over D-Bus by something
    that does not check): the import's order never adds a broken rule on the way out of it."""
    current = current_defaults()
    current[P + "FloatVoltage"] = 57.5  # above absorption 56.8: broken now
    new = {P + "AbsorptionVoltage": 55.0, P + "FloatVoltage": 54.5, P + "RebulkVoltage": 54.0}
    order = configio.write_order(SCHEMA, current, new)
    state = dict(current)
    for path in order:
        state[path] = new[path]
        # re-bulk < float and discharge < re-bulk hold at every step (they held before)
        assert state[P + "RebulkVoltage"] < state[P + "FloatVoltage"], order
        assert state[P + "DischargeVoltage"] < state[P + "RebulkVoltage"], order
    assert holds_by_hand(state)
