"""``canbridge-config export|diff|import`` against the settings service on a private
dbus-daemon, and the round trip: export, reset to defaults, import gives back the same
``settings.xml``, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dbus
import pytest

from driver.schema import load_schema
from driver.venus.busclient import SettingsClient
from tests.fixtures.venus import DbusDaemon, SettingsService

ROOT = Path(__file__).resolve().parents[2]
S = "/Settings/CanBridge/"
BUSITEM = "com.victronenergy.BusItem"

#: a 48 V Sunny Island system, moved well away from the defaults (the voltage chain moves up
#: past its old values, so a careless write order would break float <= absorption on the way)
CUSTOM: dict[str, Any] = {
    "Superb/NodeIds": "1-3,7",
    "Superb/Mode": 1,
    "Superb/ChargeVoltage": 56.8,
    "Superb/BatteryLowVoltage": 46.0,
    "Superb/Alarms/LowVoltage": 46.5,
    "Superb/Alarms/HighVoltage": 58.4,
    "Sma/AbsorptionVoltage": 58.2,
    "Sma/FloatVoltage": 57.0,
    "Sma/RebulkVoltage": 56.5,
    "Sma/BatteryService": "com.victronenergy.battery.superb_aggregate",
    "Sma/TaperBand": 0.35,
    "Web/Port": 8091,
}


def run_cli(daemon: DbusDaemon, *args: str,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driver.configio", *args], cwd=ROOT,
                          env=daemon.env(), input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=60)


def wait_file(file: Path, want: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        got = file.read_bytes()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def set_value(bus: dbus.bus.BusConnection, path: str, value: Any) -> None:
    v = dbus.Double(value) if isinstance(value, float) else (
        dbus.Int32(value) if isinstance(value, int) else dbus.String(value))
    assert bus.call_blocking("com.victronenergy.settings", path, BUSITEM, "SetValue", "v",
                             [v]) == 0


@pytest.fixture
def configured(settings_service: SettingsService, dbus_daemon: DbusDaemon) -> Any:
    schema = load_schema()
    with SettingsClient(schema, dbus_daemon.address) as client:
        assert client.register() == {}
    bus = dbus.bus.BusConnection(dbus_daemon.address)
    for key, value in CUSTOM.items():  # in an order that keeps the rules
        set_value(bus, S + key, value)
    yield bus
    bus.close()


def test_round_trip_is_byte_identical(configured: Any, dbus_daemon: DbusDaemon,
                                      settings_service: SettingsService,
                                      tmp_path: Path) -> None:
    bus = configured
    xml = settings_service.settings_file
    export = tmp_path / "cfg.json"
    r = run_cli(dbus_daemon, "export", str(export))
    assert r.returncode == 0, r.stderr
    doc = json.loads(export.read_text())
    assert doc["settings"]["Superb/NodeIds"] == "1-3,7"
    assert doc["settings"]["Sma/FloatVoltage"] == 57.0
    assert doc["settings"]["Web/Port"] == 8091
    assert doc["venus_version"] is None  # not a GX
    before = xml.read_bytes()
    assert b"1-3,7" in before

    # reset every CanBridge setting to its default, as after a factory reset
    for key in doc["settings"]:
        assert bus.call_blocking("com.victronenergy.settings", S + key, BUSITEM,
                                 "SetDefault", "", []) == 0
    deadline = time.monotonic() + 10
    while b"1-3,7" in xml.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    reset = xml.read_bytes()
    assert b"1-3,7" not in reset and reset != before

    # diff: shows the differences, writes nothing
    r = run_cli(dbus_daemon, "diff", str(export))
    assert r.returncode == 0, r.stderr
    assert 'Superb/NodeIds: "1" -> "1-3,7"' in r.stdout
    assert "Sma/FloatVoltage: 54.0 V -> 57.0 V" in r.stdout
    assert "Superb/Mode: 0 (Individual) -> 1 (Aggregate)" in r.stdout
    assert f"{len(CUSTOM)} setting(s) differ" in r.stdout
    assert xml.read_bytes() == reset

    # import without confirmation (no terminal, no --yes): nothing written
    r = run_cli(dbus_daemon, "import", str(export))
    assert r.returncode == 1 and "confirm with --yes" in r.stderr
    assert xml.read_bytes() == reset

    r = run_cli(dbus_daemon, "import", str(export), "--yes")
    assert r.returncode == 0, r.stderr
    assert f"{len(CUSTOM)} setting(s) written" in r.stderr
    assert wait_file(xml, before) == before

    # importing again changes nothing
    r = run_cli(dbus_daemon, "import", str(export), "--yes")
    assert r.returncode == 0 and "no differences" in r.stdout


def test_an_invalid_file_writes_nothing(configured: Any, dbus_daemon: DbusDaemon,
                                        settings_service: SettingsService,
                                        tmp_path: Path) -> None:
    export = tmp_path / "cfg.json"
    assert run_cli(dbus_daemon, "export", str(export)).returncode == 0
    doc = json.loads(export.read_text())
    # valid values, except one breaks a rule: float above absorption
    doc["settings"]["Sma/TaperBand"] = 1.0
    doc["settings"]["Sma/FloatVoltage"] = 58.5
    doc["settings"]["Web/Bogus"] = 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    before = settings_service.settings_file.read_bytes()
    r = run_cli(dbus_daemon, "import", str(bad), "--yes")
    assert r.returncode == 1
    assert "nothing was written" in r.stderr
    assert "Web/Bogus: unknown setting" in r.stderr
    # the rule is checked once the values are all valid: fix the unknown key
    del doc["settings"]["Web/Bogus"]
    bad.write_text(json.dumps(doc))
    r = run_cli(dbus_daemon, "import", str(bad), "--yes")
    assert r.returncode == 1
    assert "float voltage must not be above absorption voltage (58.5 and 58.2)" in r.stderr
    time.sleep(0.3)  # the stand-in saves at once (--no-delay); give a stray write a chance
    assert settings_service.settings_file.read_bytes() == before
    r = run_cli(dbus_daemon, "import", str(tmp_path / "missing.json"), "--yes")
    assert r.returncode == 1 and "cannot read" in r.stderr
    # standard output export
    r = run_cli(dbus_daemon, "export", "-")
    assert r.returncode == 0 and json.loads(r.stdout)["settings"]["Sma/TaperBand"] == 0.35


def test_without_the_settings_service(dbus_daemon: DbusDaemon, tmp_path: Path) -> None:
    r = run_cli(dbus_daemon, "export", str(tmp_path / "x.json"))
    assert r.returncode == 3
    assert "settings service (com.victronenergy.settings) is not running" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_gx_wrappers_run_the_tools(configured: Any, dbus_daemon: DbusDaemon,
                                   tmp_path: Path) -> None:
    """install/config.sh and install/diag.sh, as on the GX (the app directory on the path)."""
    env = dbus_daemon.env()
    env.pop("PYTHONPATH", None)
    # the GX's python3 has dbus-python; here the test's interpreter stands in for it
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    r = subprocess.run(["bash", str(ROOT / "install/config.sh"), "export", "-"], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["settings"]["Superb/NodeIds"] == "1-3,7"
    out = tmp_path / "d.tar.gz"
    r = subprocess.run(["bash", str(ROOT / "install/diag.sh"), "-o", str(out), "--seconds", "0",
                        "--root", str(tmp_path)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stderr
    from driver import diag

    files = dict(diag.members(out))
    assert json.loads(files["settings.json"])["settings"]["Sma/TaperBand"] == 0.35
