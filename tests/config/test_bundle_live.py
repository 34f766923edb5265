"""The diagnostic bundle taken from a running system, and replayed into a fresh driver.

The system: the settings service on a private dbus-daemon, the loopback CAN link, the simulated
Sunny Island and battery, and ``dbus-sma`` (tests/sma/conftest.py's SmaSystem). Checked here:

* ``canbridge-diag`` captures while the drivers run without disturbing them: dbus-sma's BMS
  frames keep their one-second rhythm and its published values keep following the Sunny
  Island (compared with the 0x305 frame decoded by hand: int16 LE, 0.1 V);
* ``sim.replay`` feeds the captured bus into a fresh dbus-sma, which then publishes the same
  values as the live one did when the bundle was taken.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbus
import pytest

from driver import configio, diag
from driver.schema import load_schema
from driver.venus.busclient import SettingsClient, get_items
from tests.fixtures.canlink import CanLink
from tests.fixtures.procs import Proc, python_cmd
from tests.fixtures.venus import DbusDaemon, SettingsService
from tests.sma.conftest import VEBUS, SmaSystem, Tap

ROOT = Path(__file__).resolve().parents[2]
#: vebus paths that come from the Sunny Island's own frames (0x300-0x30A)
SI_PATHS = ("/Ac/Out/L1/V", "/Ac/Out/L1/F", "/Ac/Out/L1/P", "/Ac/ActiveIn/L1/V",
            "/Ac/ActiveIn/L1/F", "/Ac/ActiveIn/L1/P", "/Ac/ActiveIn/ActiveInput",
            "/Ac/ActiveIn/Connected", "/Ac/Out/P", "/Ac/ActiveIn/P", "/Dc/0/Voltage",
            "/Dc/0/Current", "/Dc/0/Temperature", "/Ac/NumberOfPhases")


@pytest.fixture
def sma(dbus_daemon: DbusDaemon, settings_service: SettingsService, canlink: CanLink,
        procs: list[Proc]) -> Iterator[SmaSystem]:
    tap = Tap("can1")
    system = SmaSystem(dbus_daemon, settings_service, canlink, procs, dbus_daemon.workdir, tap)
    try:
        yield system
    finally:
        for p in reversed(procs):
            if p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)
            p.stop()
        procs.clear()
        tap.close()
        if system.bus is not None:
            system.bus.close()


def wait_until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_running(sma: SmaSystem) -> None:
    sma.start_si()
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 15)
    sma.wait_vebus("/Dc/0/Voltage", lambda v: v is not None, 10)


def diag_cli(sma: SmaSystem, out: Path, seconds: float, root: Path) -> Proc:
    p = Proc(python_cmd("driver.diag", "-o", str(out), "--seconds", str(seconds),
                        "--root", str(root)), sma.env(), name="canbridge-diag")
    sma.procs.append(p)
    return p


def voltage_305(data: bytes) -> float:
    """SiBatteryVoltage of 0x305: bytes 0-1, signed little-endian, 0.1 V (SMA's protocol)."""
    return int.from_bytes(data[0:2], "little", signed=True) / 10.0


def test_bundle_while_the_drivers_run_disturbs_nothing(sma: SmaSystem, tmp_path: Path) -> None:
    start_running(sma)
    root = tmp_path / "root"
    (root / "var/log/dbus-sma").mkdir(parents=True)
    (root / "var/log/dbus-sma/current").write_text("dbus-sma started\n")
    (root / "data/conf").mkdir(parents=True)
    secret = "$2a$08$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
    (root / "data/conf/vncpassword.txt").write_text(secret + "\n")
    pw = tmp_path / "web-password"
    pw.write_text(secret + "\n")
    with SettingsClient(load_schema(), sma.daemon.address) as client:
        client.register()  # as canbridge-web does
    assert sma.call("com.victronenergy.settings", "/Settings/CanBridge/Web/PasswordFile",
                    "SetValue", str(pw)) == 0

    # the BMS frames' rhythm before the capture, over 5 s
    t_before = time.monotonic()
    wait_until(lambda: time.monotonic() - t_before >= 5.0, 10, "5 s")
    before = sma.tap.times(0x351, since=t_before)

    out = tmp_path / "bundle.tar.gz"
    seconds = 6.0
    cli = diag_cli(sma, out, seconds, root)
    t_cap, _ = cli.wait_for("capturing", 20)
    # meanwhile: dbus-sma's published DC voltage keeps following the Sunny Island's 0x305
    checks = 0
    while cli.proc.poll() is None:
        mark = sma.tap.mark()
        sma.tap.wait(lambda m: m.arbitration_id == 0x305, 3.0, mark)  # a new one arrived

        def follows(mark: int = mark) -> bool:
            published = sma.vebus("/Dc/0/Voltage")
            with sma.tap.cond:
                latest = [m for _, m in sma.tap.frames[mark:] if m.arbitration_id == 0x305]
            return published == pytest.approx(voltage_305(bytes(latest[-1].data)), abs=0.05)

        wait_until(follows, 3.0, "/Dc/0/Voltage to follow the latest 0x305")
        checks += 1
    assert cli.proc.wait(30) == 0, cli.output
    t_end = time.monotonic()
    assert checks >= 3
    during = [t for t in sma.tap.times(0x351, since=t_cap) if t <= t_end]
    # one 0x351 a second (SendInterval 1 s) before and during the capture
    assert len(before) in (4, 5, 6)
    assert abs(len(during) / (t_end - t_cap) - len(before) / 5.0) < 0.35
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert gaps and max(gaps) < 1.5, gaps

    files = dict(diag.members(out))
    manifest = json.loads(files["manifest.json"])
    assert manifest["captures"]["can1"]["frames"] > 50  # 11 SI + 6 BMS frames a second
    log = files["can/can1.log"].decode()
    assert " can1 351#" in log and " can1 305#" in log
    snap = json.loads(files[f"dbus/{VEBUS}.json"])
    assert snap["items"]["/Mgmt/ProcessName"]["Value"] == "dbus-sma"
    settings = json.loads(files["settings.json"])
    assert settings["settings"]["Web/PasswordFile"] == str(pw)  # the path, not the content
    whole = subprocess.run(["gzip", "-dc", str(out)], capture_output=True, check=True).stdout
    assert secret.encode() not in whole
    assert b"N9qo8uLOickgx2ZMRZoMye" not in whole


def test_replay_of_a_bundle_into_a_fresh_driver(sma: SmaSystem, tmp_path: Path) -> None:
    start_running(sma)
    out = tmp_path / "bundle.tar.gz"
    cli = diag_cli(sma, out, 6.0, tmp_path / "root")
    t_cap, _ = cli.wait_for("capturing", 20)
    # the Sunny Island pauses for the last seconds of the capture (well inside dbus-sma's 5 s
    # staleness), so the snapshot taken 0.5 s before the end shows its last frames' values
    assert sma.si is not None
    wait_until(lambda: time.monotonic() - t_cap >= 2.5, 10, "2.5 s of capture")
    os.kill(sma.si.proc.pid, signal.SIGSTOP)
    try:
        assert cli.proc.wait(30) == 0, cli.output
    finally:
        os.kill(sma.si.proc.pid, signal.SIGCONT)
    files = dict(diag.members(out))
    live = json.loads(files[f"dbus/{VEBUS}.json"])["items"]
    expected = {p: live[p]["Value"] for p in SI_PATHS}
    assert all(v is not None for v in expected.values()), expected
    assert expected["/Ac/Out/L1/V"] == 230.0 and expected["/Ac/Out/L1/F"] == 50.0

    # a fresh system: everything stopped, settings reset, a new dbus-sma with a new state dir
    for p in reversed(sma.procs):
        p.stop()
    sma.procs.clear()
    schema = load_schema()
    with SettingsClient(schema, sma.daemon.address) as client:
        client.register()
        client.reset_to_defaults()
        # the user's settings come from the bundle (the same import as canbridge-config)
        checked = configio.check_document(schema, json.loads(files["settings.json"]),
                                          version=configio.schema_version())
        assert configio.apply_document(schema, client, checked).ok
    sma.workdir = tmp_path / "fresh"
    sma.workdir.mkdir()
    sma.start_bridge(battery=None)
    bus = dbus.bus.BusConnection(sma.daemon.address)
    try:
        fresh = get_items(bus, VEBUS)
        assert fresh["/Dc/0/Voltage"]["Value"] is None  # nothing heard yet
        replay = subprocess.run(
            [sys.executable, "-m", "sim.replay", str(out), "--for", "sma",
             "--until-snapshot"], cwd=ROOT, env=sma.env(), capture_output=True, text=True,
            timeout=60)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "replayed" in replay.stdout
        got = get_items(bus, VEBUS)
    finally:
        bus.close()
    assert {p: got[p]["Value"] for p in SI_PATHS} == expected
    assert got["/Mgmt/ProcessName"]["Value"] == "dbus-sma"
