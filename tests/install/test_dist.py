"""The release bundle (make_dist.py): contents, checksums, reproducibility, vendored deps."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from install import make_dist
from tests.install.conftest import (
    DATA,
    REPO,
    diff_snapshots,
    make_gx_root,
    require_tool,
    run_installer,
    snapshot,
)

PYENV_312 = Path.home() / ".pyenv/versions/3.12.1/bin/python3.12"


def build(out: Path, *extra: str) -> Path:
    res = subprocess.run(
        [sys.executable, str(REPO / "install/make_dist.py"), "--out", str(out), "--no-gui-build",
         "--gui-dir", str(DATA / "gui"), *extra],
        capture_output=True, text=True, cwd=REPO, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return Path(res.stdout.splitlines()[0])


def test_bundle_is_complete_checked_and_reproducible(tmp_path: Path) -> None:
    first = build(tmp_path / "a", "--no-vendor")
    second = build(tmp_path / "b", "--no-vendor")
    assert first.name == f"canbridge-{make_dist.project_version()}-novendor.tar.gz"
    assert first.read_bytes() == second.read_bytes(), "the archive is not reproducible"
    digest, name = Path(f"{first}.sha256").read_text().split()
    assert name == first.name
    assert digest == hashlib.sha256(first.read_bytes()).hexdigest()
    with tarfile.open(first) as tf:
        names = tf.getnames()
        tf.extractall(tmp_path / "x", filter="tar")
    top = f"canbridge-{make_dist.project_version()}"
    assert all(n == top or n.startswith(top + "/") for n in names)
    files = {n[len(top) + 1:] for n in names if n != top}
    for wanted in ("VERSION", "SHA256SUMS", "settings_schema.json", "driver/superb/main.py",
                   "driver/sma/main.py", "webui/__init__.py", "install/install.sh",
                   "install/boot.sh", "install/remote-install.sh", "install/classic_gui.py",
                   "gui-v2/CanBridge.json", "gui-v1/PageSettings.snippet",
                   "gui-v1/PageCanBridge.qml"):
        assert wanted in files, f"{wanted} missing from the bundle"
    assert not any(f.startswith(("sim/", "tests/", "vendor/")) for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    require_tool("sha256sum")
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path / "x" / top,
                   check=True)
    unpacked = tmp_path / "x" / top
    assert (unpacked / "install/install.sh").stat().st_mode & 0o777 == 0o755
    assert (unpacked / "driver/app.py").stat().st_mode & 0o777 == 0o644


def test_lock_file_entries() -> None:
    pins = make_dist.read_lock()
    names = {p.name for p in pins}
    # what the GX needs and Venus OS does not ship
    assert {"python-can", "canopen", "cantools", "flask", "werkzeug", "jinja2", "markupsafe",
            "itsdangerous", "click", "blinker", "waitress", "bitstruct", "wrapt"} <= names
    assert not names & {"dbus-python", "pygobject", "jsonschema", "rpds-py"}
    assert all(len(p.sha256) == 64 for p in pins)


def check_imports(python: str, bundle: Path) -> str:
    """Import the vendored set with ``python`` and no site-packages (``-S``)."""
    code = f"""
import sys
sys.path[:0] = [{str(bundle)!r}, {str(bundle / 'vendor')!r}]
import can, canopen, cantools, flask, werkzeug, jinja2, markupsafe, itsdangerous, click
import blinker, waitress, bitstruct, wrapt
for mod in (can, canopen, cantools, flask, markupsafe, bitstruct, wrapt, waitress):
    assert mod.__file__.startswith({str(bundle / 'vendor')!r}), mod.__file__
assert markupsafe.escape("<a>") == "&lt;a&gt;"
from cantools.database import load_file
db = load_file({str(bundle / 'driver/sma/sma_si.dbc')!r})
assert db.messages
msg = db.messages[0]
data = msg.encode({{s.name: (s.minimum or 0) for s in msg.signals}}, strict=False)
msg.decode(data)
bus = can.Bus(interface="virtual", channel="x", receive_own_messages=True)
bus.send(can.Message(arbitration_id=0x351, data=b"12345678", is_extended_id=False))
assert bus.recv(1).arbitration_id == 0x351
bus.shutdown()
net = canopen.Network()
from driver.schema import load_schema  # no jsonschema here, as on a GX: the fallback checks
assert load_schema().settings
import driver.sma.frames
app = flask.Flask("t")
app.add_url_rule("/", "i", lambda: "ok")
assert app.test_client().get("/").data == b"ok"
print("%d.%d" % sys.version_info[:2])
"""
    res = subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{python}: {res.stdout}{res.stderr}"
    return res.stdout.strip()


def find_python312() -> str | None:
    """A working Python 3.12 interpreter on this machine, if there is one."""
    for cand in (os.environ.get("CANBRIDGE_PYTHON312"), str(PYENV_312),
                 shutil.which("python3.12")):
        if cand and Path(cand).is_file():
            res = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, check=False)
            if res.returncode == 0 and res.stdout.strip() == "(3, 12)":
                return cand
    return None


def test_vendored_dependencies_are_pure_and_work(vendored_bundle_dir: Path) -> None:
    vendor = vendored_bundle_dir / "vendor"
    compiled = [p for p in vendor.rglob("*") if p.suffix in (".so", ".pyd", ".c", ".h")]
    assert not compiled
    for pin in make_dist.read_lock():
        assert list(vendor.glob(f"{pin.name}-{pin.version}.dist-info")) or \
            list(vendor.glob(f"{pin.name.replace('-', '_')}-{pin.version}.dist-info")), pin.name
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=vendored_bundle_dir,
                   check=True)
    versions = [check_imports(sys.executable, vendored_bundle_dir)]
    # Venus OS 3.60+ runs Python 3.12: use one when this machine has it
    py312 = find_python312()
    if py312:
        versions.append(check_imports(py312, vendored_bundle_dir))
    print("vendored set imported with Python", ", ".join(versions))


def test_bad_lock_entry_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "vendor.lock"
    lock.write_text("flask 3.1.3 egg abc\n")
    with pytest.raises(make_dist.DistError):
        make_dist.read_lock(lock)
    lock.write_text("markupsafe 3.0.3 sdist " + "0" * 64 + "\n")
    with pytest.raises(make_dist.DistError, match="package directories"):
        make_dist.read_lock(lock)


def test_compiled_wheel_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "fast-1.0-cp312-cp312-linux_armv7l.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fast/__init__.py", "")
    with pytest.raises(make_dist.DistError, match="not a pure-Python wheel"):
        make_dist.unpack(make_dist.Pin("fast", "1.0", "wheel", "0" * 64), wheel, tmp_path / "v")


def test_release_bundle_with_the_qml_builder(tmp_path: Path) -> None:
    """``make dist`` as released: the QML builder's real output, installed and removed."""
    out = tmp_path / "dist"
    res = subprocess.run(
        [sys.executable, str(REPO / "install/make_dist.py"), "--out", str(out), "--no-vendor",
         "--gui-dir", str(tmp_path / "qml")], capture_output=True, text=True, cwd=REPO,
        check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    with tarfile.open(Path(res.stdout.splitlines()[0])) as tf:
        tf.extractall(tmp_path / "x", filter="tar")
    (bundle,) = (tmp_path / "x").iterdir()
    plugin = json.loads((bundle / "gui-v2/CanBridge.json").read_text())
    assert plugin["name"] == "CanBridge"
    assert base64.b64decode(plugin["resource"]).startswith(b"qres")
    snippet = (bundle / "gui-v1/PageSettings.snippet").read_text()
    assert "MbSubMenu" in snippet
    root = make_gx_root(tmp_path / "gx")
    before = snapshot(root)
    run_installer(bundle, root)
    assert (root / "data/apps/enabled/CanBridge/gui-v2/CanBridge.json").is_file()
    page = (root / "opt/victronenergy/gui/qml/PageSettings.qml").read_text()
    assert "MbSubMenu" in page.split("// CanBridge begin")[1]
    for qml in (bundle / "gui-v1").glob("*.qml"):
        assert (root / "opt/victronenergy/gui/qml" / qml.name).read_text() == qml.read_text()
    run_installer(bundle, root, "--uninstall")
    assert not diff_snapshots(before, snapshot(root))
