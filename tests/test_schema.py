"""The settings schema: validated by its JSON Schema, semantic checks, value validation."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import jsonschema
import pytest

from driver.schema import (
    META_SCHEMA_FILE,
    SCHEMA_FILE,
    SchemaError,
    SettingValueError,
    format_node_ids,
    load_schema,
    meta_errors,
    parse_node_ids,
    parse_schema,
)

RAW = json.loads(SCHEMA_FILE.read_text())


def test_schema_file_is_valid_against_its_meta_schema():
    meta = json.loads(META_SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(meta)
    jsonschema.Draft202012Validator(meta).validate(RAW)


def test_schema_loads_and_covers_both_drivers_and_the_web_page():
    schema = load_schema()
    keys = {s.key for s in schema}
    for needed in ["Superb/NodeIds", "Superb/Mode", "Superb/CanInterface", "Superb/Bitrate",
                   "Superb/ChargeVoltage", "Superb/MaxChargeCurrent", "Sma/CanInterface",
                   "Sma/AbsorptionVoltage", "Sma/FloatVoltage", "Sma/StaleWarningTime",
                   "Sma/SendInterval", "Web/Port", "General/LogLevel"]:
        assert needed in keys
    assert all(s.path.startswith("/Settings/CanBridge/") for s in schema)
    # Every group has at least one setting, every setting a known group.
    assert {g.id for g in schema.groups} == {s.group for s in schema}


def test_types_are_explicit_and_defaults_carry_them():
    schema = load_schema()
    for s in schema:
        d = s.dbus_default()
        assert type(d) is {"i": int, "f": float, "s": str}[s.type], s.path
    # A float setting whose default is a whole number still registers as a float.
    assert isinstance(schema.by_key["Sma/EnergyPersistInterval"].dbus_default(), float)
    assert isinstance(schema.by_key["Sma/EnergyPersistInterval"].dbus_min(), float)


def _broken(mutate) -> str:
    """The program's error for a mutated schema; the meta-schema must reject it too."""
    data = copy.deepcopy(RAW)
    mutate(data)
    with pytest.raises(SchemaError) as info:
        parse_schema(data)
    return str(info.value)


def test_meta_schema_names_the_setting():
    data = copy.deepcopy(RAW)
    _setting(data, "Superb/Mode").update(type="x")
    _setting(data, "Web/Port").pop("max")
    errors = meta_errors(data)
    assert any("/Settings/CanBridge/Superb/Mode" in e for e in errors)
    assert any("/Settings/CanBridge/Web/Port" in e and "max" in e for e in errors)
    assert meta_errors(RAW) == []


def _setting(data, key):
    return next(s for s in data["settings"] if s["path"].endswith(key))


def test_broken_schemas_name_the_setting_and_the_problem():
    msg = _broken(lambda d: _setting(d, "Superb/PollInterval").update(default=99.0))
    assert "/Settings/CanBridge/Superb/PollInterval" in msg and "default" in msg
    msg = _broken(lambda d: _setting(d, "Superb/Mode").update(type="x"))
    assert "Superb/Mode" in msg and "type" in msg
    msg = _broken(lambda d: _setting(d, "Superb/Mode").update(widget="slider"))
    assert "Superb/Mode" in msg and "widget" in msg
    msg = _broken(lambda d: _setting(d, "Sma/FloatVoltage").update(default=60.0))
    assert "float voltage must not be above absorption voltage" in msg
    msg = _broken(lambda d: d["settings"].append(dict(_setting(d, "Web/Port"))))
    assert "Web/Port" in msg and "more than once" in msg
    msg = _broken(lambda d: _setting(d, "Web/Port").pop("max"))
    assert "Web/Port" in msg
    msg = _broken(lambda d: _setting(d, "Superb/Mode").update(group="nope"))
    assert "Superb/Mode" in msg


def test_programs_do_not_need_jsonschema():
    """On a GX jsonschema is absent; the built-in checks still catch bad defaults and rules."""
    code = (
        "import sys, json, copy; sys.modules['jsonschema'] = None\n"
        "from driver.schema import parse_schema, SCHEMA_FILE, SchemaError\n"
        "d = json.loads(SCHEMA_FILE.read_text())\n"
        "parse_schema(d)\n"
        "next(s for s in d['settings'] if s['path'].endswith('Web/Port'))['default'] = 80\n"
        "try:\n    parse_schema(d)\nexcept SchemaError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Web/Port" in out.stdout and "below the minimum" in out.stdout


def test_value_validation():
    schema = load_schema()
    poll = schema.by_key["Superb/PollInterval"]
    assert poll.validate("2.5") == 2.5
    assert poll.validate(3) == 3.0 and isinstance(poll.validate(3), float)
    for bad in ["abc", True, None, float("nan"), 0.1, 11, "1e9", [1]]:
        with pytest.raises(SettingValueError):
            poll.validate(bad)
    mode = schema.by_key["Superb/Mode"]
    assert mode.validate("1") == 1
    with pytest.raises(SettingValueError):
        mode.validate(1.5)
    with pytest.raises(SettingValueError):
        mode.validate(2)
    bitrate = schema.by_key["Superb/Bitrate"]
    with pytest.raises(SettingValueError, match="not one of"):
        bitrate.validate(200000)
    text = schema.by_key["Sma/BatteryService"]
    assert text.validate("<script>") == "<script>"  # stored as text; escaping is the page's job
    with pytest.raises(SettingValueError):
        text.validate("x" * 1000)
    with pytest.raises(SettingValueError):
        text.validate("a\nb")


def test_node_id_lists():
    assert parse_node_ids("1,2,3") == [1, 2, 3]
    assert parse_node_ids(" 5 , 1-3 ") == [1, 2, 3, 5]
    assert format_node_ids([3, 1]) == "1,3"
    for bad, why in [("", "empty"), ("1,1", "more than once"), ("0", "outside"),
                     ("128", "outside"), ("1,x", "not a node ID"), ("3-1", "backwards"),
                     ("1-2-3", "not a node ID"), ("1,,2", "not a node ID")]:
        with pytest.raises(SettingValueError, match=why):
            parse_node_ids(bad)
    nodes = load_schema().by_key["Superb/NodeIds"]
    assert nodes.validate("3,1-2") == "1,2,3"


def test_rule_violations():
    schema = load_schema()
    values = schema.defaults()
    assert schema.rule_violations(values) == []
    values["/Settings/CanBridge/Sma/FloatVoltage"] = 57.0
    assert "float voltage must not be above absorption voltage" in schema.rule_violations(values)


def test_readme_settings_reference_is_up_to_date():
    out = subprocess.run([sys.executable, "scripts/settings_doc.py", "--check"],
                         capture_output=True, text=True, cwd=SCHEMA_FILE.parent)
    assert out.returncode == 0, out.stderr
