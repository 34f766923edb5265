"""The diagnostic bundle against a fake GX root and the loopback CAN link: contents, bounds,
listen-only captures that python-can reads back, and no secret anywhere in the archive."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import can
import pytest

from driver import diag
from tests.fixtures.canlink import CanLink

S = "/Settings/CanBridge/"
PW_HASH = b"$2a$08$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
OTHER_HASH = b"$2a$08$Qw8r5Jc0VxJcXo9yq7bE1eF0aYB3pq1Zx8mUu7gkq8v0dM1cQpX2K"
FLASK_KEY = bytes.fromhex("9f1c2e3d4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0")


def fake_root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "opt/victronenergy").mkdir(parents=True)
    (root / "opt/victronenergy/version").write_text("v3.60~21\n20250513150214\n")
    (root / "data/conf").mkdir(parents=True)
    (root / "data/conf/vncpassword.txt").write_bytes(PW_HASH + b"\n")
    superb = root / "var/log/dbus-superb"
    superb.mkdir(parents=True)
    # 4000 lines of 40 bytes = 160,000 bytes, far above the 50,000-byte limit used below
    (superb / "current").write_bytes(b"".join(
        b"@4000000065a1b2c3 line %05d of superb..\n" % n for n in range(4000)))
    (superb / "@4000000065a00000.s").write_bytes(b"rotated superb log\n")
    sma = root / "var/log/dbus-sma"
    sma.mkdir(parents=True)
    (sma / "@4000000065a00000.s").write_bytes(b"old sma log\n")
    # secrets that leaked into logs: the password hash and the web process's key
    (sma / "current").write_bytes(b"sma ok\nleaked " + PW_HASH + b" here\nkey "
                                  + FLASK_KEY + b"\nlast sma line\n")
    web = root / "var/log/canbridge-web"
    web.mkdir(parents=True)
    (web / "current").write_bytes(b"web line with the other hash " + OTHER_HASH + b"\n")
    net = root / "sys/class/net"
    for name, kind in (("can1", "280"), ("vecan0", "280"), ("eth0", "1")):
        d = net / name
        (d / "statistics").mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        (d / "operstate").write_text("up\n" if name != "vecan0" else "down\n")
        (d / "flags").write_text("0x40c1\n" if name != "vecan0" else "0x80\n")
        (d / "mtu").write_text("16\n")
        (d / "statistics/rx_packets").write_text("1234\n")
        (d / "statistics/rx_errors").write_text("7\n")
    return root


#: frames a peer sends while the capture runs (written by hand)
FRAMES = [
    can.Message(arbitration_id=0x305, data=bytes.fromhex("1202f6ff14003c00"),
                is_extended_id=False),
    can.Message(arbitration_id=0x18FF50E5, data=b"\x01\x02\x03", is_extended_id=True),
    can.Message(arbitration_id=0x701, data=b"\x05", is_extended_id=False),
    can.Message(arbitration_id=0x123, data=b"", is_extended_id=False),
]


def settings_for(other_pw: Path) -> dict[str, Any]:
    return {S + "Superb/CanInterface": "vecan0", S + "Superb/Bitrate": 250000,
            S + "Sma/CanInterface": "can1", S + "Sma/Bitrate": 500000,
            S + "Superb/NodeIds": "1,2,3", S + "Web/PasswordFile": str(other_pw)}


def read_bundle(path: Path) -> dict[str, bytes]:
    return dict(diag.members(path))


def test_bundle_contents_bounds_capture_and_no_secrets(tmp_path: Path,
                                                       canlink: CanLink) -> None:
    root = fake_root(tmp_path)
    other_pw = tmp_path / "web-password.txt"
    other_pw.write_bytes(OTHER_HASH + b"\n")
    cfg = diag.BundleConfig(root=root, log_limit=50_000, capture_seconds=2.5,
                            secrets=[FLASK_KEY], app_dir=Path(__file__).resolve().parents[2])
    snapshot = {"com.victronenergy.canbridge.superb": {"items": {
        "/Status": {"Value": "ok", "Text": "ok"}}}}
    steps: list[tuple[float, str]] = []

    peer = can.Bus(interface="canlink", channel="can1")
    sent = threading.Event()

    def send_later() -> None:
        time.sleep(0.8)  # the capture is listening by then (it opened its bus first)
        for m in FRAMES:
            peer.send(m)
        sent.set()

    t = threading.Thread(target=send_later)
    t.start()
    out = tmp_path / "bundle.tar.gz"
    try:
        report = diag.write_bundle(out, cfg, settings=lambda: settings_for(other_pw),
                                   snapshot=lambda: snapshot,
                                   progress=lambda f, text: steps.append((f, text)))
    finally:
        t.join()
        peer.shutdown()
    assert sent.is_set()
    files = read_bundle(out)

    # what is inside
    for name in ("manifest.json", "versions.json", "settings.json", "can/interfaces.json",
                 "can/can1.log", "can/vecan0.log",
                 "dbus/com.victronenergy.canbridge.superb.json",
                 "logs/dbus-superb/current", "logs/dbus-sma/current",
                 "logs/canbridge-web/current"):
        assert name in files, (name, sorted(files))
    versions = json.loads(files["versions.json"])
    assert versions["venus"] == "v3.60~21"
    assert versions["canbridge"] == "0.1.0"
    assert versions["vendor_lock"]["python-can"] == "4.6.1"
    assert "python-can" in versions["packages"]
    assert versions["python"].startswith("3.1")
    settings = json.loads(files["settings.json"])
    assert settings["format"] == "canbridge-config"
    assert settings["settings"]["Sma/CanInterface"] == "can1"
    ifaces = json.loads(files["can/interfaces.json"])
    assert sorted(ifaces) == ["can1", "vecan0"]  # eth0 is not CAN (type 1)
    assert ifaces["can1"]["up"] is True and ifaces["vecan0"]["up"] is False
    assert ifaces["can1"]["statistics"] == {"rx_errors": 7, "rx_packets": 1234}
    snap = json.loads(files["dbus/com.victronenergy.canbridge.superb.json"])
    assert snap["items"]["/Status"]["Value"] == "ok"

    # logs: the newest 50,000 bytes of dbus-superb, whole lines, ending with the last line
    superb = files["logs/dbus-superb/current"]
    assert 49_000 < len(superb) <= 50_000
    assert superb.endswith(b"line 03999 of superb..\n")
    assert superb.startswith(b"@4000000065a1b2c3 line ")
    rotated = files.get("logs/dbus-superb/@4000000065a00000.s", b"")
    assert len(superb) + len(rotated) <= 50_000  # the rotated file gets what is left
    assert files["logs/dbus-sma/@4000000065a00000.s"] == b"old sma log\n"

    # the capture: candump log format, read back by python-can, exactly what the peer sent
    text = files["can/can1.log"].decode()
    assert "can1 305#1202F6FF14003C00" in text
    got = list(can.CanutilsLogReader(io.StringIO(text)))
    assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in got] == [
        (0x305, False, bytes.fromhex("1202f6ff14003c00")),
        (0x18FF50E5, True, b"\x01\x02\x03"),
        (0x701, False, b"\x05"),
        (0x123, False, b""),
    ]
    assert files["can/vecan0.log"] == b""  # configured but silent
    manifest = json.loads(files["manifest.json"])
    assert manifest["captures"]["can1"]["frames"] == 4
    assert manifest["bounds"]["log_bytes_per_service"] == 50_000
    assert manifest["snapshot_time"] is not None

    # progress: rising, with the capture reported while it runs
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(text.startswith("capturing vecan0, can1: ") for _, text in steps)

    # no secret anywhere: every byte of the uncompressed archive, headers included
    whole = gzip.decompress(out.read_bytes())
    for secret in (PW_HASH, OTHER_HASH, FLASK_KEY):
        assert secret not in whole
    assert b"leaked [redacted] here" in files["logs/dbus-sma/current"]
    assert "logs/dbus-sma/current: a secret was found and redacted" in report.problems
    assert not any(n.endswith("vncpassword.txt") for n in files)

    # the size bound: members within the total, and the archive smaller still
    assert sum(len(v) for v in files.values()) <= cfg.total_limit
    assert out.stat().st_size < sum(len(v) for v in files.values())


def test_total_bound_and_interfaces_that_cannot_be_shared(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    cfg = diag.BundleConfig(root=root, total_limit=30_000, capture_seconds=1,
                            interfaces=["slcan:/dev/ttyACM0"])
    out = tmp_path / "small.tar.gz"
    report = diag.write_bundle(out, cfg, settings=dict, snapshot=None)
    files = read_bundle(out)
    # the manifest is outside the bound (and says what was cut); everything else within it
    assert sum(len(v) for k, v in files.items() if k != "manifest.json") <= 30_000
    assert any("cut to" in p for p in report.problems)
    assert any("cut to" in p for p in json.loads(files["manifest.json"])["problems"])
    cap = report.captures["slcan:/dev/ttyACM0"]
    assert "can only be opened by one process" in cap["error"] and "file" not in cap
    # settings were unavailable: noted, bundle still written
    assert "settings.json" not in files


def test_capture_code_cannot_transmit() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send(self, msg: Any) -> None:
            self.sent.append(msg)

        def recv(self, timeout: float) -> None:
            return None

        def shutdown(self) -> None:
            pass

    bus = Recorder()
    ro = diag._ListenOnly(bus)
    assert not hasattr(ro, "send")
    cap = diag.Capture("can1")
    diag.capture_bus(bus, cap, 0.3, 1000, "can1", threading.Event())
    assert bus.sent == [] and cap.frames == 0


@pytest.mark.parametrize(("value", "name"), [("slcan:/dev/ttyACM0", "slcan_dev_ttyACM0"),
                                             ("can1", "can1"), ("../../etc", "etc")])
def test_member_names_are_safe(value: str, name: str) -> None:
    assert diag.safe_name(value) == name


def test_tar_members_stay_inside_their_directory(tmp_path: Path) -> None:
    cfg = diag.BundleConfig(root=fake_root(tmp_path), capture_seconds=0)
    out = tmp_path / "b.tar.gz"
    diag.write_bundle(out, cfg, settings=dict, snapshot=None)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    top = {n.split("/", 1)[0] for n in names}
    assert len(top) == 1 and next(iter(top)).startswith("canbridge-diag-")
    assert not any(".." in n or n.startswith("/") for n in names)
