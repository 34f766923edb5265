"""``make replay`` (``sim.demo --replay BUNDLE``): the whole system runs on a bundle's settings
and CAN capture instead of the simulators, and dbus-sma publishes what the capture carries."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from driver import configio
from driver.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]


def make_bundle(path: Path) -> None:
    """A bundle as canbridge-diag writes it, by hand: settings (defaults, log level Debug so
    the import is visible) and a 3 s capture of can1 where a Sunny Island sends 0x305 with
    53.0 V (0x0212, 0.1 V), 12.3 A discharging, 20 °C, 60 % twice a second."""
    doc = configio.export_document(load_schema(), {}, version=configio.schema_version(),
                                   venus="v3.60~21")
    doc["settings"]["General/LogLevel"] = 0
    doc.pop("defaults_used", None)
    lines = []
    t0 = 1_800_000_000.0
    for n in range(6):
        lines.append(f"({t0 + n * 0.5:.6f}) can1 305#12027B00C8002C01 R\n")
    manifest = {"snapshot_time": t0 + 3.0,
                "captures": {"can1": {"setting": "can1", "frames": 6, "file": "can/can1.log"},
                             "vecan0": {"setting": "vecan0", "frames": 0,
                                        "file": "can/vecan0.log"}}}
    members = {"manifest.json": json.dumps(manifest), "settings.json": json.dumps(doc),
               "can/can1.log": "".join(lines), "can/vecan0.log": ""}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"canbridge-diag-test/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_demo_replays_a_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar.gz"
    make_bundle(bundle)
    out = subprocess.run(
        [sys.executable, "-m", "sim.demo", "--replay", str(bundle), "--duration", "15",
         "--web-port", "0", "--keep-logs"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    logs = Path(next(ln.split(" ", 3)[3] for ln in out.stdout.splitlines()
                     if ln.startswith("logs kept in ")))
    try:
        replay_log = (logs / "replay.log").read_text()
        assert "replayed 6 frames" in replay_log
        assert not (logs / "sim-sma.log").exists() and not (logs / "sim-superb.log").exists()
        status = [ln for ln in out.stdout.splitlines() if re.match(r"\[\s*\d+ s\] ", ln)]
        # dbus-sma decoded the replayed 0x305: 53.0 V on its vebus service
        assert any(re.search(r"canbridge_sma_can1: .* dc 53\.00?V?\b", ln) for ln in status), status
        # the bundle's settings were put in force (log level Debug: debug lines appear)
        assert "DEBUG" in (logs / "dbus-sma.log").read_text()
    finally:
        shutil.rmtree(logs, ignore_errors=True)
