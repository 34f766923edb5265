"""Fixtures for the installer tests: release bundles and simulated GX root directories.

A simulated GX root is a temporary directory with the parts of a GX the installer touches:
``/data`` (with ``/data/conf``), ``/service``, ``/var/log``, ``/opt/victronenergy/version`` and
the classic gui's ``PageSettings.qml`` (a small stand-in written for these tests). The
installer runs with ``--root`` pointing at it and never writes anywhere else.

Bundles are built with ``install/make_dist.py`` from this checkout, once per test session:
without ``vendor/`` for most tests (fast, no network), and once with the vendored
dependencies (downloaded with pip into ``build/vendor-cache`` the first time, then offline).
The GUI artifacts in the bundles are test stand-ins from ``tests/install/data/gui``, so the
installer tests do not depend on the QML builder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_gx import make_can_root

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
APP_REL = "data/apps/available/canbridge"
STOCK_PAGE = DATA / "PageSettings.qml"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed; run 'make deps' "
                    "(scripts/setup-system.sh installs it)", pytrace=False)
    return path


def build_bundle(out: Path, *, vendor: bool) -> Path:
    """Build a bundle with make_dist.py, unpack it under ``out``; the unpacked directory."""
    cmd = [sys.executable, str(REPO / "install" / "make_dist.py"), "--out", str(out),
           "--no-gui-build", "--gui-dir", str(DATA / "gui")]
    if not vendor:
        cmd.append("--no-vendor")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        pytest.fail(f"make_dist.py failed:\n{res.stdout}{res.stderr}", pytrace=False)
    archive = Path(res.stdout.splitlines()[0])
    with tarfile.open(archive) as tf:
        tf.extractall(out / "unpacked", filter="tar")
    (top,) = (out / "unpacked").iterdir()
    return top


@pytest.fixture(scope="session")
def bundle_dir() -> Iterator[Path]:
    """An unpacked bundle without vendor/ (the drivers' deps come from the test venv)."""
    tmp = Path(tempfile.mkdtemp(prefix="cb-dist-"))
    try:
        yield build_bundle(tmp, vendor=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def vendored_bundle_dir() -> Iterator[Path]:
    """An unpacked bundle with vendor/ (pip downloads cached in build/vendor-cache)."""
    tmp = Path(tempfile.mkdtemp(prefix="cb-distv-"))
    try:
        yield build_bundle(tmp, vendor=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_gx_root(root: Path, version: str = "v3.60~13", page: str | None = None,
                 model: str = "cerbo-gx-mk1", usb_adapter: bool = False) -> Path:
    """Lay out a simulated GX under ``root`` (its CAN interfaces those of ``model``)."""
    for d in ("data/conf", "service", "var/log", "opt/victronenergy/gui/qml"):
        (root / d).mkdir(parents=True, exist_ok=True)
    make_can_root(root, model, usb_adapter=usb_adapter)
    (root / "opt/victronenergy/version").write_text(f"{version}\n20240101000000\n")
    qml = root / "opt/victronenergy/gui/qml/PageSettings.qml"
    qml.write_text(page if page is not None else STOCK_PAGE.read_text())
    qml.chmod(0o644)
    (root / "data/conf/settings.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Settings><CanBridge><Superb>'
        '<ChargeVoltage type="f">14.1</ChargeVoltage></Superb></CanBridge></Settings>\n')
    return root


@pytest.fixture
def gx_root(tmp_path: Path) -> Path:
    """A fresh simulated GX root."""
    return make_gx_root(tmp_path / "gx")


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every path under ``root``: (kind, mode, content or link target)."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", mode, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, b"")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode, p.read_bytes())
            else:
                out[rel] = ("other", mode, b"")
    return out


def diff_snapshots(a: dict[str, tuple[str, int, bytes | str]],
                   b: dict[str, tuple[str, int, bytes | str]]) -> list[str]:
    """Human-readable differences between two snapshots (empty when identical)."""
    lines = [f"only before: {p}" for p in sorted(a.keys() - b.keys())]
    lines += [f"only after: {p}" for p in sorted(b.keys() - a.keys())]
    lines += [f"changed: {p} {a[p][:2]} -> {b[p][:2]}" for p in sorted(a.keys() & b.keys())
              if a[p] != b[p]]
    return lines


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def installer_env(**extra: str) -> dict[str, str]:
    """Environment for the installer: helpers run with this interpreter (it has dbus-python);
    service control is off unless a test replaces it (nothing is supervised in a bare root)."""
    env = dict(os.environ)
    env.pop("CANBRIDGE_ROOT", None)
    env["CANBRIDGE_PYTHON"] = sys.executable
    env["CANBRIDGE_SVOK"] = "false"
    env.setdefault("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/canbridge-test-bus")
    # the simulated GX is a Cerbo GX (MK1), 32-bit ARM, whatever machine runs the tests
    env.setdefault("CANBRIDGE_ARCH", "armv7l")
    env.update(extra)
    return env


def run_installer(bundle: Path, root: Path, *args: str, env: dict[str, str] | None = None,
                  check: bool = True, script: str = "install/install.sh") -> Result:
    """Run ``install.sh --root ROOT args`` from ``bundle``."""
    res = subprocess.run(["bash", str(bundle / script), "--root", str(root), *args],
                         capture_output=True, text=True, env=env or installer_env(),
                         timeout=120, check=False)
    out = Result(res.returncode, res.stdout, res.stderr)
    if check and res.returncode != 0:
        pytest.fail(f"install.sh {' '.join(args)} failed ({res.returncode}):\n{out.output}",
                    pytrace=False)
    return out


def app_dir(root: Path) -> Path:
    return root / APP_REL


def read_state(root: Path) -> dict[str, str]:
    state = {}
    for line in (app_dir(root) / "conf/install.conf").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            state[k] = v
    return state


def rc_line(root: Path) -> str:
    app = app_dir(root)
    return (f"[ -f {app}/install/boot.sh ] && bash {app}/install/boot.sh "
            f">{app}/conf/boot.log 2>&1 & # CanBridge")


def fake_command(directory: Path, name: str, log: Path, exit_code: int = 0) -> Path:
    """An executable that appends its name and arguments to ``log`` and exits ``exit_code``."""
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / name
    p.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {exit_code}\n')
    p.chmod(0o755)
    return p
