"""Replay a CAN capture from a diagnostic bundle into the drivers, off the GX.

    python -m sim.replay BUNDLE.tar.gz [--for sma|superb|none] [--channel can1[=can1]]
                         [--until-snapshot] [--speed 1] [--loop] [--list]

Reads the ``can/<interface>.log`` captures (candump log format) of a bundle written by
``canbridge-diag`` and sends their frames, with their original spacing, on the same channel
names through the loopback CAN link (``$CANBRIDGE_CANLINK``) — or onto any python-can bus
(``--channel can1=socketcan:vcan0`` puts them on a Linux virtual CAN interface, where
``candump`` shows them). A driver started on that channel then sees the user's bus.

The frames the driver under test sends itself are left out, so it is not fed its own echo:
``--for sma`` drops dbus-sma's BMS frames (0x351, 0x355, 0x356, 0x35A, 0x35C, 0x35E, 0x35F);
``--for superb`` drops dbus-superb's NMT and SDO requests (0x000, 0x600-0x67F), which leaves
the batteries' heartbeats, PDOs and emergencies (what a listener sees); ``--for all`` both.
``--drop ID,...`` adds identifiers. A replay cannot answer dbus-superb's SDO requests (the
captured answers went to the requests of the moment), so values that it polls are not
reproduced; everything a listener sees is (dbus-sma decodes only what the Sunny Island
broadcasts).

``--until-snapshot`` stops at the moment the bundle's D-Bus snapshot was taken, so the
driver's published values can be compared with those in ``dbus/*.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import sys
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can

log = logging.getLogger("sim.replay")

#: identifiers the driver under test transmits itself (its own frames are not replayed)
OWN_FRAMES: dict[str, tuple[range | tuple[int, ...], ...]] = {
    "sma": ((0x351, 0x355, 0x356, 0x35A, 0x35C, 0x35E, 0x35F),),
    "superb": ((0x000,), range(0x600, 0x680)),
    "all": ((0x351, 0x355, 0x356, 0x35A, 0x35C, 0x35E, 0x35F), (0x000,), range(0x600, 0x680)),
    "none": (),
}


@dataclass
class Bundle:
    """The parts of a diagnostic bundle a replay needs."""

    captures: dict[str, str]        # channel -> candump log text
    manifest: dict[str, Any]
    settings: dict[str, Any] | None  # the settings.json document
    snapshot: dict[str, dict[str, Any]]  # service -> {"items": ...}

    @property
    def snapshot_time(self) -> float | None:
        t = self.manifest.get("snapshot_time")
        return float(t) if isinstance(t, (int, float)) else None


def read_bundle(path: Path | str) -> Bundle:
    """Read a bundle's captures, manifest, settings and D-Bus snapshot."""
    files: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile() or m.size > 64 * 1024 * 1024:
                continue
            name = m.name.split("/", 1)[-1]
            if name in {"manifest.json", "settings.json"} or name.startswith(("can/", "dbus/")):
                f = tar.extractfile(m)
                if f is not None:
                    files[name] = f.read()
    manifest = json.loads(files.get("manifest.json", b"{}"))
    captures: dict[str, str] = {}
    for setting, info in manifest.get("captures", {}).items():
        member = info.get("file")
        if member in files:
            channel = setting.split(":", 1)[-1] if setting.startswith(
                ("canlink:", "socketcan:", "virtual:")) else setting
            captures[channel] = files[member].decode("utf-8", errors="replace")
    snapshot = {name[5:-5]: json.loads(data) for name, data in files.items()
                if name.startswith("dbus/") and name.endswith(".json")}
    settings = json.loads(files["settings.json"]) if "settings.json" in files else None
    return Bundle(captures, manifest, settings, snapshot)


def import_settings(bundle: Path | str, address: str | None = None) -> int:
    """Put the bundle's settings in force (registered first, checked and written like
    ``canbridge-config import``); returns how many were written. Raises
    :class:`driver.configio.ImportRefused` if the bundle has none or they are invalid."""
    from driver import configio
    from driver.schema import load_schema
    from driver.venus.busclient import SettingsClient

    doc = read_bundle(bundle).settings
    if doc is None:
        raise configio.ImportRefused(["the bundle has no settings.json"])
    schema = load_schema()
    checked = configio.check_document(schema, doc, version=configio.schema_version())
    with SettingsClient(schema, address) as client:
        client.register()
        res = configio.apply_document(schema, client, checked)
    if not res.ok:
        raise configio.ImportRefused([res.refused or "; ".join(res.mismatches)])
    return len(res.written)


def frames_of(text: str) -> list[can.Message]:
    """The frames of a candump log text (python-can's reader)."""
    return list(can.CanutilsLogReader(io.StringIO(text)))


def dropped_ids(preset: str, extra: Iterable[int] = ()) -> set[int]:
    ids: set[int] = set(extra)
    for group in OWN_FRAMES[preset]:
        ids.update(group)
    return ids


def select(frames: list[can.Message], drop: set[int],
           until: float | None = None) -> list[can.Message]:
    """The frames to replay: not the driver's own (standard IDs in ``drop``), not after
    ``until`` (epoch seconds)."""
    return [m for m in frames
            if not (not m.is_extended_id and m.arbitration_id in drop)
            and not m.is_error_frame
            and (until is None or m.timestamp <= until)]


def parse_channel(spec: str) -> tuple[str, str]:
    """``can1`` or ``can1=socketcan:vcan0``: (channel in the capture, bus to send on)."""
    src, _, dst = spec.partition("=")
    return src, dst or src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Replay a diagnostic bundle's CAN capture.")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--for", dest="preset", choices=sorted(OWN_FRAMES), default="none",
                    help="leave out the frames this driver sends itself (default: none)")
    ap.add_argument("--drop", default="", help="further identifiers to leave out, e.g. "
                                               "0x351,0x35C")
    ap.add_argument("--channel", action="append",
                    help="capture channel to replay, optionally =bus to send it on "
                         "(default: every captured channel, same name)")
    ap.add_argument("--until-snapshot", action="store_true",
                    help="stop where the bundle's D-Bus snapshot was taken")
    ap.add_argument("--speed", type=float, default=1.0, help="time factor (default 1)")
    ap.add_argument("--loop", action="store_true", help="replay again and again")
    ap.add_argument("--list", action="store_true", help="only list the captures")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")
    from driver.canbus import open_bus

    bundle = read_bundle(args.bundle)
    if args.list:
        for ch, text in bundle.captures.items():
            print(f"{ch}: {len(frames_of(text))} frames")
        return 0
    if not bundle.captures:
        log.error("%s has no CAN capture", args.bundle)
        return 1
    specs = [parse_channel(c) for c in args.channel] if args.channel else [
        (c, c) for c in bundle.captures]
    drop = dropped_ids(args.preset, (int(x, 0) for x in args.drop.split(",") if x.strip()))
    until = bundle.snapshot_time if args.until_snapshot else None
    stopped = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stopped.update(flag=True))
    signal.signal(signal.SIGINT, lambda *_: stopped.update(flag=True))
    # one merged, time-ordered stream over every replayed channel
    streams: list[tuple[float, int, can.Message, Any]] = []
    buses = []
    try:
        for i, (src, dst) in enumerate(specs):
            if src not in bundle.captures:
                log.error("no capture of %s in the bundle (it has %s)", src,
                          ", ".join(bundle.captures))
                return 1
            bus = open_bus(dst)
            buses.append(bus)
            for m in select(frames_of(bundle.captures[src]), drop, until):
                streams.append((m.timestamp, i, m, bus))
        streams.sort(key=lambda e: (e[0], e[1]))
        total = 0
        while True:
            total += _replay_merged(streams, args.speed, lambda: stopped["flag"])
            log.info("replayed %d frames", total)
            sys.stdout.flush()
            if not args.loop or stopped["flag"]:
                break
    finally:
        for bus in buses:
            bus.shutdown()
    return 0


def _replay_merged(streams: list[tuple[float, int, can.Message, Any]], speed: float,
                   stop: Any) -> int:
    if not streams:
        return 0
    t0 = streams[0][0]
    start = time.monotonic()
    sent = 0
    for ts, _i, m, bus in streams:
        if stop():
            break
        delay = start + (ts - t0) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        bus.send(can.Message(arbitration_id=m.arbitration_id, is_extended_id=m.is_extended_id,
                             is_remote_frame=m.is_remote_frame, dlc=m.dlc,
                             data=bytes(m.data), timestamp=time.time()))
        sent += 1
    return sent


if __name__ == "__main__":
    sys.exit(main())
