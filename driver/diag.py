"""The diagnostic bundle: everything a helper needs to diagnose a CanBridge installation.

``canbridge-diag`` (and the *Diagnostic bundle* button of the web page) writes one ``.tar.gz``::

    canbridge-diag-<host>-<UTC time>/
      manifest.json          what is inside, the bounds used, what could not be collected
      versions.json          CanBridge, Venus OS, Python, the vendored / installed packages
      settings.json          every CanBridge setting (the format of ``canbridge-config export``)
      dbus/<service>.json    GetItems of every CanBridge D-Bus service
      can/interfaces.json    the CAN interfaces (sysfs): state, flags, statistics
      can/<interface>.log    a capture of each configured CAN bus, candump log format
      logs/<service>/...     the last part of each service's log (multilog ``current`` and
                             the newest rotated files)

**Captures** are python-can ``CanutilsLogWriter`` files (``(time) interface ID#DATA``): read by
``canplayer -I``, by python-can's ``can.LogReader`` and by ``sim.replay``. A capture only
listens: the bus object is wrapped so that the capture code has no way to transmit, and only
interfaces that can be opened twice are captured (SocketCAN, the loopback link); a serial
adapter (``slcan:...``) belongs to the driver that has it open and is skipped, with a note.

**Secrets never go in**: the password file is never read into the archive, nor are session
keys (they only exist in the web process's memory). As a second line of defence every member
is scrubbed of the password file's content and any other secret the caller names before it is
written (a log line that leaked one would show ``[redacted]``).

**Bounded size**: logs ``log_limit`` bytes per service (default 1 MiB, the newest part),
captures ``capture_limit`` bytes of text per bus (default 8 MiB, about 180,000 frames; the
capture stops early when reached), D-Bus snapshots 1 MiB each, and ``total_limit`` (default
24 MiB) over all members before compression. The archive is typically a tenth of that.

Everything about the GX's file system is read below ``root`` (``/`` on a GX), so the tests run
the same code against a fake root.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import platform
import re
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import __version__, canports

log = logging.getLogger("canbridge.diag")

SERVICES = ("dbus-superb", "dbus-sma", "canbridge-web")
MIB = 1024 * 1024
MAX_CAPTURE_SECONDS = 300.0
#: python-can interfaces that more than one process can open at once (capturing never takes
#: the bus away from a driver)
SHAREABLE = ("socketcan", "canlink", "virtual")
#: the CAN interface settings, by schema key
CAN_SETTINGS = (("Superb/CanInterface", "Superb/Bitrate"), ("Sma/CanInterface", "Sma/Bitrate"))
GX_PASSWORD_FILE = "data/conf/vncpassword.txt"
PACKAGES = ("python-can", "canopen", "cantools", "flask", "werkzeug", "jinja2", "waitress",
            "dbus-python", "PyGObject", "bcrypt")
REDACTED = b"[redacted]"

Progress = Callable[[float, str], None]


class BundleError(Exception):
    """The bundle could not be written at all (the output is unusable)."""


@dataclass
class BundleConfig:
    """What goes into a bundle and its bounds (see the module docstring)."""

    root: Path = Path("/")
    services: tuple[str, ...] = SERVICES
    log_limit: int = MIB
    capture_seconds: float = 10.0
    capture_limit: int = 8 * MIB
    snapshot_limit: int = MIB
    total_limit: int = 24 * MIB
    #: interfaces to capture (CanInterface setting values); None: the configured ones
    interfaces: list[str] | None = None
    #: the application directory (for install/vendor.lock and vendor/); default: this one
    app_dir: Path | None = None
    #: files whose content must never appear (besides the GX's password file below ``root``)
    secret_files: list[Path] = field(default_factory=list)
    #: further secret strings (e.g. the web process's session key)
    secrets: list[bytes] = field(default_factory=list)


@dataclass
class BundleReport:
    """What was collected (also written as ``manifest.json``)."""

    name: str
    members: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot_time: float | None = None
    size: int = 0


# -- pieces ------------------------------------------------------------------------------------

def tail_bytes(file: Path, limit: int) -> tuple[bytes, bool]:
    """The last ``limit`` bytes of ``file`` (from the start of a line); truncated or not."""
    with open(file, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size <= limit:
            f.seek(0)
            return f.read(), False
        f.seek(size - limit)
        data = f.read(limit)
    nl = data.find(b"\n")
    return (data[nl + 1:] if 0 <= nl < len(data) - 1 else data), True


def service_logs(root: Path, service: str, limit: int) -> list[tuple[str, bytes, bool]]:
    """A service's multilog files, newest first (``current``, then rotated ``@*.s``/``.u``),
    within ``limit`` bytes in all: (name, data, truncated)."""
    d = root / "var/log" / service
    files: list[Path] = []
    if (d / "current").is_file():
        files.append(d / "current")
    try:
        rotated = sorted((p for p in d.iterdir() if p.name.startswith("@")),
                         key=lambda p: p.name, reverse=True)
    except OSError:
        rotated = []
    files.extend(rotated)
    out = []
    left = limit
    for f in files:
        if left <= 0:
            break
        try:
            data, cut = tail_bytes(f, left)
        except OSError:
            continue
        out.append((f.name, data, cut))
        left -= len(data)
    return out


def vendored_packages(app_dir: Path) -> dict[str, str]:
    """Name -> version from ``install/vendor.lock`` (what the release bundle carries)."""
    lock = app_dir / "install" / "vendor.lock"
    out: dict[str, str] = {}
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.lstrip().startswith("#"):
            out[parts[0]] = parts[1]
    return out


def installed_packages(app_dir: Path) -> dict[str, str]:
    """Versions of the packages CanBridge uses, as Python finds them (vendor/ first)."""
    from importlib import metadata

    out: dict[str, str] = {}
    vendor = app_dir / "vendor"
    if vendor.is_dir():
        for dist in metadata.distributions(path=[str(vendor)]):
            name = dist.metadata["Name"]
            if name:
                out[name] = f"{dist.version} (vendor)"
    for name in PACKAGES:
        if name in out:
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for mod in ("dbus", "gi"):
        if mod in sys.modules:
            ver = getattr(sys.modules[mod], "__version__", None)
            if ver:
                out.setdefault(f"{mod} (module)", str(ver))
    return out


def versions(root: Path, app_dir: Path) -> dict[str, Any]:
    """``versions.json``."""
    from driver.configio import venus_version

    return {"canbridge": __version__, "venus": venus_version(root),
            "python": sys.version, "platform": platform.platform(),
            "machine": platform.machine(), "vendor_lock": vendored_packages(app_dir),
            "packages": installed_packages(app_dir)}


def _read_small(path: Path, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace").strip()
    except OSError:
        return None


def can_interfaces(root: Path) -> dict[str, Any]:
    """The CAN network interfaces below ``root/sys/class/net`` (type 280, ARPHRD_CAN): state,
    flags, MTU, queue length and every statistics counter."""
    net = root / "sys/class/net"
    out: dict[str, Any] = {}
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        return out
    for name in names:
        d = net / name
        if _read_small(d / "type") != "280":
            continue
        info: dict[str, Any] = {}
        for attr in ("operstate", "carrier", "flags", "mtu", "tx_queue_len"):
            value = _read_small(d / attr)
            if value is not None:
                info[attr] = value
        try:
            flags = int(info.get("flags", "0"), 16)
            info["up"] = bool(flags & 0x1)
        except ValueError:
            pass
        stats: dict[str, int | str] = {}
        try:
            for f in sorted((d / "statistics").iterdir()):
                value = _read_small(f)
                if value is not None:
                    stats[f.name] = int(value) if value.isdigit() else value
        except OSError:
            pass
        info["statistics"] = stats
        out[name] = info
    return out


def ip_details(root: Path) -> str | None:
    """``ip -details -statistics link show`` (bitrate, bus state, error counters) on a GX."""
    import shutil
    import subprocess

    if str(root) != "/" or shutil.which("ip") is None:
        return None
    try:
        r = subprocess.run(["ip", "-details", "-statistics", "link", "show"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def configured_interfaces(settings: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    """The distinct CAN interface settings (by key) with their bitrates, in schema order."""
    out: list[tuple[str, int | None]] = []
    for iface_key, rate_key in CAN_SETTINGS:
        value = settings.get(iface_key)
        if not isinstance(value, str) or not value.strip():
            continue
        role = canports.ROLE_SUPERB if iface_key.startswith("Superb/") else canports.ROLE_SMA
        try:  # "auto" and friends: the port the driver itself opens (docs/install.md)
            iface = canports.resolve(value.strip(), role)
        except canports.CanPortError:
            iface = value.strip()  # the capture reports the error for this bus
        if iface not in [i for i, _ in out]:
            rate = settings.get(rate_key)
            out.append((iface, rate if isinstance(rate, int) else None))
    return out


class _ListenOnly:
    """A bus as the capture sees it: it can receive and close, never send."""

    def __init__(self, bus: Any) -> None:
        self._recv = bus.recv
        self._shutdown = bus.shutdown

    def recv(self, timeout: float) -> Any:
        return self._recv(timeout)

    def shutdown(self) -> None:
        self._shutdown()


def safe_name(text: str) -> str:
    """A file-name-safe form of an interface setting (``slcan:/dev/ttyACM0`` ->
    ``slcan_dev_ttyACM0``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "bus"


@dataclass
class Capture:
    """One bus being captured into candump log text."""

    setting: str
    buf: io.StringIO = field(default_factory=io.StringIO)
    frames: int = 0
    truncated: bool = False
    error: str = ""
    first: float | None = None
    last: float | None = None


def capture_bus(bus: Any, cap: Capture, seconds: float, limit: int, channel: str,  # noqa: PLR0917
                stop: threading.Event) -> None:
    """Receive frames from ``bus`` for ``seconds`` into ``cap`` (candump log format)."""
    import can

    writer = can.CanutilsLogWriter(cap.buf, channel=channel)
    listener = _ListenOnly(bus)
    end = time.monotonic() + seconds
    try:
        while not stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            msg = listener.recv(min(0.2, left))
            if msg is None:
                continue
            msg.channel = channel
            writer.on_message_received(msg)
            cap.frames += 1
            cap.first = msg.timestamp if cap.first is None else cap.first
            cap.last = msg.timestamp
            if cap.buf.tell() >= limit:
                cap.truncated = True
                break
    except can.CanError as exc:
        cap.error = f"receiving failed: {exc}"
    finally:
        try:
            listener.shutdown()
        except Exception as exc:  # noqa: BLE001 - closing a failed bus
            log.debug("closing the capture bus: %s", exc)


def open_for_capture(setting: str, bitrate: int | None) -> Any:
    """Open a configured interface to listen, or raise ValueError saying why not."""
    from driver.canbus import bus_spec, open_bus

    spec = bus_spec(setting, bitrate)
    if spec.interface not in SHAREABLE:
        raise ValueError(f"{spec.interface} adapters can only be opened by one process (the "
                         "driver has it): not captured; use canbridge-canmon with the driver "
                         "stopped")
    return open_bus(setting, bitrate, receive_own_messages=False)


# -- the archive -----------------------------------------------------------------------------------

class _Archive:
    """A tar.gz being written, scrubbing secrets and keeping the size bound."""

    def __init__(self, fileobj: Any, prefix: str, secrets: list[bytes], limit: int,
                 report: BundleReport) -> None:
        self.tar = tarfile.open(fileobj=fileobj, mode="w:gz", compresslevel=6)  # noqa: SIM115
        self.prefix = prefix
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)
        self.left = limit
        self.report = report
        self.mtime = int(time.time())

    def add(self, name: str, data: bytes | str, bounded: bool = True) -> None:
        """Add a member (scrubbed; cut to what is left of the bound unless ``bounded`` is
        False, which only the manifest is: it is small and says what was cut)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        for secret in self.secrets:
            if secret in raw:
                raw = raw.replace(secret, REDACTED)
                self.report.problems.append(f"{name}: a secret was found and redacted")
        if bounded and len(raw) > self.left:
            self.report.problems.append(f"{name}: cut to {self.left} bytes (total bound)")
            raw = raw[:max(0, self.left)]
        self.left -= len(raw)
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size = len(raw)
        info.mtime = self.mtime
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(raw))
        self.report.members[name] = len(raw)

    def add_json(self, name: str, obj: Any, limit: int | None = None,
                 bounded: bool = True) -> None:
        text = json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n"
        if limit is not None and len(text) > limit:
            self.report.problems.append(f"{name}: {len(text)} bytes, cut to {limit}")
            text = text[:limit]
        self.add(name, text, bounded)

    def close(self) -> None:
        self.tar.close()


def _secrets(cfg: BundleConfig, settings: Mapping[str, Any]) -> list[bytes]:
    """Every secret the bundle must not contain: the content (and each line) of the password
    files (the GX's, the ``Web/PasswordFile`` setting's, the caller's) and the caller's."""
    files = [cfg.root / GX_PASSWORD_FILE, *cfg.secret_files]
    pw = settings.get("Web/PasswordFile")
    if isinstance(pw, str) and pw:
        files.append(Path(pw))
    out = list(cfg.secrets)
    for f in files:
        try:
            data = f.read_bytes()[:65536]
        except OSError:
            continue
        out.append(data)
        out.extend(line.strip() for line in data.splitlines())
    return out


def build_bundle(out: Any, cfg: BundleConfig, *,
                 settings: Callable[[], Mapping[str, Any]],
                 snapshot: Callable[[], Mapping[str, Any]] | None,
                 progress: Progress | None = None,
                 stop: threading.Event | None = None,
                 schema_version: int = 1) -> BundleReport:
    """Write a bundle to ``out`` (a binary file object). See the module docstring.

    ``settings()`` returns the CanBridge settings by path; ``snapshot()`` the GetItems of every
    CanBridge D-Bus service (:func:`driver.venus.busclient.canbridge_snapshot`). Any part that
    cannot be collected is noted in the manifest; the bundle is still written.
    """
    from driver.configio import export_document, venus_version
    from driver.schema import load_schema

    step = progress or (lambda _f, _t: None)
    halt = stop or threading.Event()
    now = _dt.datetime.now(_dt.UTC)
    host = safe_name(socket.gethostname())[:40]
    name = f"canbridge-diag-{host}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    report = BundleReport(name)
    app_dir = cfg.app_dir or Path(__file__).resolve().parent.parent
    schema = load_schema()

    step(0.02, "reading the settings")
    try:
        current = dict(settings())
    except Exception as exc:  # noqa: BLE001 - the bundle is most useful when things are broken
        report.problems.append(f"settings: {exc}")
        current = {}
    by_key = {s.key: current.get(s.path) for s in schema}
    if not current:
        # without the settings service the configured ports are unknown: capture the default
        # ones (vecan0, can1), which is where CanBridge runs unless someone changed it
        by_key.update({s.key: s.dbus_default() for s in schema
                       if s.key in {k for pair in CAN_SETTINGS for k in pair}})
        if cfg.interfaces is None and cfg.capture_seconds > 0:
            report.problems.append("settings unknown: capturing the default CAN interfaces")
    secrets = _secrets(cfg, by_key)
    archive = _Archive(out, name, secrets, cfg.total_limit, report)
    try:
        if current:
            archive.add_json("settings.json", export_document(
                schema, current, version=schema_version, venus=venus_version(cfg.root),
                now=now))
        step(0.05, "versions")
        archive.add_json("versions.json", versions(cfg.root, app_dir))
        step(0.08, "CAN interfaces")
        archive.add_json("can/interfaces.json", can_interfaces(cfg.root))
        details = ip_details(cfg.root)
        if details is not None:
            archive.add("can/ip-details.txt", details)

        wanted = ([(i, None) for i in cfg.interfaces] if cfg.interfaces is not None
                  else configured_interfaces(by_key))
        seconds = max(0.0, min(float(cfg.capture_seconds), MAX_CAPTURE_SECONDS))
        caps: list[Capture] = []
        threads: list[threading.Thread] = []
        for setting, rate in wanted if seconds > 0 else []:
            cap = Capture(setting)
            caps.append(cap)
            try:
                bus = open_for_capture(setting, rate)
            except (ValueError, OSError) as exc:
                cap.error = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - can.CanError and interface errors
                cap.error = f"cannot open: {exc}"
                continue
            channel = safe_name(setting.split(":", 1)[-1])
            t = threading.Thread(target=capture_bus, name=f"capture-{channel}", daemon=True,
                                 args=(bus, cap, seconds, cfg.capture_limit, channel, halt))
            t.start()
            threads.append(t)
        if threads:
            t0 = time.monotonic()
            while any(t.is_alive() for t in threads):
                elapsed = time.monotonic() - t0
                frames = sum(c.frames for c in caps)
                step(0.1 + 0.75 * min(1.0, elapsed / seconds) if seconds else 0.85,
                     f"capturing {', '.join(c.setting for c in caps)}: "
                     f"{elapsed:.0f} of {seconds:.0f} s, {frames} frames")
                if halt.is_set():
                    break
                # the D-Bus snapshot is taken while the capture still listens, just before it
                # ends, so a replay of the capture up to this moment reproduces these values
                if report.snapshot_time is None and elapsed >= seconds - 0.5:
                    _snapshot(archive, report, snapshot, cfg)
                time.sleep(0.1)
            for t in threads:
                t.join(5)
        step(0.87, "D-Bus services")
        if report.snapshot_time is None:
            _snapshot(archive, report, snapshot, cfg)
        for cap in caps:
            info: dict[str, Any] = {"setting": cap.setting, "frames": cap.frames,
                                    "truncated": cap.truncated, "first": cap.first,
                                    "last": cap.last, "seconds": seconds}
            if cap.error:
                info["error"] = cap.error
                report.problems.append(f"capture of {cap.setting}: {cap.error}")
            else:
                member = f"can/{safe_name(cap.setting)}.log"
                info["file"] = member
                archive.add(member, cap.buf.getvalue())
            report.captures[cap.setting] = info
        step(0.92, "logs")
        for service in cfg.services:
            files = service_logs(cfg.root, service, cfg.log_limit)
            if not files:
                report.problems.append(f"logs of {service}: none under "
                                       f"{cfg.root / 'var/log' / service}")
            for fname, data, cut in files:
                archive.add(f"logs/{service}/{fname}", data)
                if cut:
                    report.problems.append(f"logs/{service}/{fname}: only the last "
                                           f"{len(data)} bytes")
        manifest = {"name": name, "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "canbridge_version": __version__, "snapshot_time": report.snapshot_time,
                    "bounds": {"log_bytes_per_service": cfg.log_limit,
                               "capture_bytes_per_bus": cfg.capture_limit,
                               "capture_seconds": seconds,
                               "total_bytes": cfg.total_limit},
                    "captures": report.captures, "members": dict(report.members),
                    "problems": report.problems,
                    "capture_format": "candump log (python-can CanutilsLogWriter); replay "
                                      "with canplayer -I FILE or python -m sim.replay"}
        archive.add_json("manifest.json", manifest, bounded=False)
    finally:
        archive.close()
    step(1.0, "done")
    return report


def _snapshot(archive: _Archive, report: BundleReport,
              snapshot: Callable[[], Mapping[str, Any]] | None, cfg: BundleConfig) -> None:
    report.snapshot_time = time.time()
    if snapshot is None:
        return
    try:
        services = dict(snapshot())
    except Exception as exc:  # noqa: BLE001 - D-Bus may be the problem being diagnosed
        report.problems.append(f"D-Bus snapshot: {exc}")
        return
    for service, data in sorted(services.items()):
        archive.add_json(f"dbus/{service}.json",
                         {"service": service, "time": report.snapshot_time, **data},
                         cfg.snapshot_limit)


def write_bundle(path: Path, cfg: BundleConfig, **kwargs: Any) -> BundleReport:
    """:func:`build_bundle` into ``path`` (written to a temporary file, then renamed)."""
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            report = build_bundle(f, cfg, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report.size = path.stat().st_size
    return report


def members(path: Path) -> Iterable[tuple[str, bytes]]:
    """(name below the top directory, content) of every file in a bundle."""
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                if f is not None:
                    yield m.name.split("/", 1)[-1], f.read()


# -- command line ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``canbridge-diag [-o FILE] [--seconds N]``."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="canbridge-diag",
        description="Write a diagnostic bundle (.tar.gz): logs, settings, versions, D-Bus "
                    "snapshots, CAN interfaces and a listen-only capture of each CAN bus. "
                    "No password or session key goes in.")
    ap.add_argument("-o", "--output", help="the file to write (default: "
                                           "canbridge-diag-<host>-<time>.tar.gz here)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help=f"seconds to capture each CAN bus (0: none; at most "
                         f"{MAX_CAPTURE_SECONDS:.0f}; default 10)")
    ap.add_argument("--log-mb", type=float, default=1.0,
                    help="newest MiB of each service's log (default 1)")
    ap.add_argument("--interface", action="append",
                    help="capture this interface instead of the configured ones (repeatable)")
    ap.add_argument("--address", help="D-Bus address (default: $DBUS_SESSION_BUS_ADDRESS, "
                                      "else the system bus as on a GX)")
    ap.add_argument("--root", default="/", help="the GX's file system root (default /)")
    ap.add_argument("--quiet", action="store_true", help="no progress on standard error")
    args = ap.parse_args(argv)

    from driver.configio import schema_version
    from driver.schema import load_schema
    from driver.venus.busclient import BusUnavailable, SettingsClient, canbridge_snapshot

    cfg = BundleConfig(root=Path(args.root), capture_seconds=args.seconds,
                       log_limit=int(args.log_mb * MIB), interfaces=args.interface)
    schema = load_schema()
    client: SettingsClient | None
    try:
        client = SettingsClient(schema, args.address)
    except BusUnavailable as exc:
        sys.stderr.write(f"canbridge-diag: {exc}; continuing without settings and "
                         "snapshots\n")
        client = None

    def read_settings() -> Mapping[str, Any]:
        if client is None:
            raise BusUnavailable("no D-Bus connection")
        return client.settings()

    def take_snapshot() -> Mapping[str, Any]:
        if client is None:
            raise BusUnavailable("no D-Bus connection")
        return canbridge_snapshot(client.bus)

    last = {"t": 0.0}

    def progress(fraction: float, text: str) -> None:
        if args.quiet or (time.monotonic() - last["t"] < 1.0 and fraction < 1.0):
            return
        last["t"] = time.monotonic()
        sys.stderr.write(f"[{fraction * 100:3.0f}%] {text}\n")

    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(args.output or f"canbridge-diag-{safe_name(socket.gethostname())[:40]}-"
                               f"{stamp}.tar.gz")
    try:
        report = write_bundle(path, cfg, settings=read_settings, snapshot=take_snapshot,
                              progress=progress, schema_version=schema_version())
    except OSError as exc:
        sys.stderr.write(f"canbridge-diag: cannot write {path}: {exc.strerror}\n")
        return 1
    finally:
        if client is not None:
            client.close()
    for problem in report.problems:
        sys.stderr.write(f"note: {problem}\n")
    frames = ", ".join(f"{k}: {v['frames']} frames" for k, v in report.captures.items()
                       if "error" not in v)
    sys.stderr.write(f"wrote {path} ({report.size} bytes{'; ' + frames if frames else ''})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
