"""The Venus edge as the drivers use it: live settings in real processes on a real dbus-daemon.

These run against whichever velib_python and settings service the environment selects
(stand-ins by default; ``VELIB_PYTHON`` / ``LOCALSETTINGS`` for the real ones).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import dbus
import pytest

from tests.fixtures.procs import Proc, child_env, python_cmd

SETTINGS = "com.victronenergy.settings"
POLL = "/Settings/CanBridge/Superb/PollInterval"
NODES = "/Settings/CanBridge/Superb/NodeIds"


def _env(dbus_daemon):
    import os

    extra = {}
    if os.environ.get("VELIB_PYTHON"):
        extra["VELIB_PYTHON"] = os.environ["VELIB_PYTHON"]
    return child_env(dbus_daemon.env(), **extra)


def _dbus_send_set(address: str, path: str, typed_value: str) -> str:
    out = subprocess.run(
        ["dbus-send", f"--bus={address}", "--print-reply", f"--dest={SETTINGS}", path,
         "com.victronenergy.BusItem.SetValue", typed_value],
        capture_output=True, text=True, timeout=10, check=True,
    )
    return out.stdout


def _get(address: str, path: str):
    bus = dbus.bus.BusConnection(address)
    try:
        return bus.call_blocking(SETTINGS, path, "com.victronenergy.BusItem", "GetValue", "", [])
    finally:
        bus.close()


def _start_superb(procs, dbus_daemon) -> Proc:
    p = Proc(python_cmd("driver.superb.main"), _env(dbus_daemon), "dbus-superb")
    procs.append(p)
    p.wait_for(r"dbus-superb \S+ running", 20)
    return p


def test_running_process_picks_up_dbus_send_change_within_1s(procs, settings_service):
    p = _start_superb(procs, settings_service.daemon)
    mark = p.mark()
    t0 = time.monotonic()
    reply = _dbus_send_set(settings_service.daemon.address, POLL, "variant:double:2.5")
    assert "int32 0" in reply
    t, _ = p.wait_for(r"PollInterval changed: 1\.0 -> 2\.5", 5, start=mark)
    assert t - t0 < 1.0, f"took {t - t0:.3f} s"


def test_out_of_range_write_is_refused_and_driver_keeps_last_good_value(procs, settings_service):
    p = _start_superb(procs, settings_service.daemon)
    addr = settings_service.daemon.address
    assert "int32 0" in _dbus_send_set(addr, POLL, "variant:double:2.0")
    p.wait_for(r"PollInterval changed: 1\.0 -> 2\.0", 5)
    mark = p.mark()
    assert "int32 -1" in _dbus_send_set(addr, POLL, "variant:double:99.0")
    assert float(_get(addr, POLL)) == 2.0
    # A value the settings service accepts but the schema refuses (duplicate node IDs):
    assert "int32 0" in _dbus_send_set(addr, NODES, "variant:string:1,1")
    p.wait_for(r"NodeIds = '1,1' refused: node ID 1 appears more than once; keeping '1'", 5,
               start=mark)
    # The next good change is still applied.
    assert "int32 0" in _dbus_send_set(addr, NODES, "variant:string:2-3")
    p.wait_for(r"NodeIds changed: '1' -> '2,3'", 5, start=mark)
    assert "PollInterval changed: 2.0 -> 99" not in p.output


def test_settings_survive_settings_service_restart_and_driver_carries_on(
        procs, settings_service):
    p = _start_superb(procs, settings_service.daemon)
    addr = settings_service.daemon.address
    assert "int32 0" in _dbus_send_set(addr, POLL, "variant:double:3.0")
    p.wait_for(r"PollInterval changed: 1\.0 -> 3\.0", 5)
    # The settings service writes its file just after it answers (localsettings does the same
    # with --no-delay): wait until the value is on disk, then kill it without warning.
    deadline = time.monotonic() + 10
    # (the PollInterval element itself: other settings may hold 3.0 too, e.g. ValueMaxAge)
    stored = re.compile(r"<PollInterval\b[^>]*>3\.0<")
    while not stored.search(settings_service.settings_file.read_text()
                            if settings_service.settings_file.exists() else ""):
        assert time.monotonic() < deadline, "the value never reached settings.xml"
        time.sleep(0.05)
    mark = p.mark()
    settings_service.stop(kill=True)
    p.wait_for(r"left D-Bus; keeping the last values", 10, start=mark)
    settings_service.start()
    p.wait_for(r"settings registered again", 15, start=mark)
    assert float(_get(addr, POLL)) == 3.0
    # Still live after the restart.
    mark = p.mark()
    t0 = time.monotonic()
    assert "int32 0" in _dbus_send_set(addr, POLL, "variant:double:4.0")
    t, _ = p.wait_for(r"PollInterval changed: 3\.0 -> 4\.0", 5, start=mark)
    assert t - t0 < 1.0
    assert p.proc.poll() is None


def test_missing_settings_service_at_start_waits_without_crashing(procs, dbus_daemon,
                                                                   tmp_workdir):
    p = Proc(python_cmd("driver.superb.main"), _env(dbus_daemon), "dbus-superb")
    procs.append(p)
    p.wait_for(r"waiting for com\.victronenergy\.settings", 20)
    time.sleep(1.5)
    assert p.proc.poll() is None, "the driver must wait, not exit"
    assert p.output.count("waiting for com.victronenergy.settings") == 1
    from tests.fixtures.venus import SettingsService, real_localsettings

    datadir = tmp_workdir / "late"
    datadir.mkdir()
    svc = SettingsService(daemon=dbus_daemon, datadir=datadir, real=real_localsettings(),
                          log=tmp_workdir / "late.log")
    svc.start()
    try:
        p.wait_for(r"dbus-superb \S+ running", 15)
        assert float(_get(dbus_daemon.address, POLL)) == 1.0
    finally:
        p.stop()
        svc.stop()


def test_invalid_schema_stops_with_a_message_naming_the_setting(dbus_daemon, tmp_workdir):
    from driver.schema import SCHEMA_FILE

    data = json.loads(SCHEMA_FILE.read_text())
    for s in data["settings"]:
        if s["path"].endswith("Superb/SdoTimeout"):
            s["default"] = 5.0
    bad = tmp_workdir / "schema.json"
    bad.write_text(json.dumps(data))
    out = subprocess.run(python_cmd("driver.superb.main", "--schema", str(bad)),
                         env=_env(dbus_daemon), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "/Settings/CanBridge/Superb/SdoTimeout" in out.stderr
    assert "above the maximum" in out.stderr


def test_sigterm_exits_cleanly(procs, settings_service):
    p = _start_superb(procs, settings_service.daemon)
    assert p.stop(signal.SIGTERM) == 0
    assert "stopped (exit code 0)" in p.output


def test_logs_name_the_velib_in_use(procs, settings_service):
    p = _start_superb(procs, settings_service.daemon)
    _, line = p.wait_for(r"using velib_python from", 5)
    import os

    assert ("VELIB_PYTHON" in line) if os.environ.get("VELIB_PYTHON") else ("stand-in" in line)


@pytest.mark.parametrize("log_level, expect_debug", [(0, True), (2, False)])
def test_log_level_setting_applies_live(procs, settings_service, log_level, expect_debug):
    p = _start_superb(procs, settings_service.daemon)
    addr = settings_service.daemon.address
    assert "int32 0" in _dbus_send_set(addr, "/Settings/CanBridge/General/LogLevel",
                                       f"variant:int32:{log_level}")
    mark = p.mark()
    time.sleep(0.3)
    assert "int32 0" in _dbus_send_set(addr, POLL, "variant:double:2.5")
    time.sleep(0.7)
    lines = p.output.splitlines()[mark:]
    # The INFO line about the change is shown at debug level and hidden at warning level.
    assert any("PollInterval changed" in ln for ln in lines) is expect_debug
