"""install.sh against a GX whose root file system is read-only, as on every real GX.

Venus mounts its root file system read-only (``read-only-rootfs`` in meta-victronenergy's
venus-image.inc) and offers ``/opt/victronenergy/swupdate-scripts/remount-rw.sh`` to make it
writable. Here the simulated GX's ``/opt`` is a tmpfs mounted **read-only** in a private mount
namespace (``unshare -m``, owned by the test): a read-only mount refuses writes even for root,
unlike file modes. Its ``remount-rw.sh`` stand-in does what Victron's does, on that mount:
remount it read-write and set the ``/`` line of the simulated ``/etc/fstab`` to ``defaults``.

The installer runs inside that namespace (``nsenter``); the test reads the namespace's view
through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.install.conftest import (
    STOCK_PAGE,
    app_dir,
    installer_env,
    make_gx_root,
    rc_line,
    require_tool,
)

GUI_DIR = "opt/victronenergy/gui/qml"
FSTAB = ("/dev/root            /                    auto       ro              0  1\n"
         "proc                 /proc                proc       defaults        0  0\n")
FAKE_REMOUNT_RW = """#!/bin/sh
# Test stand-in for Victron's remount-rw.sh: the simulated GX's root file system is <root>/opt.
R=$(cd "$(dirname "$0")/../../.." && pwd)
echo "remount-rw $*" >>"$R/remount-rw.calls"
if grep -q " $R/opt tmpfs ro[, ]" /proc/mounts; then
    echo "making the rootfs writable..."
    mount -o remount,rw "$R/opt" || exit 1
    awk '$2~"^/$"{$4="defaults"}1' "$R/etc/fstab" | cat > "$R/etc/fstab.tmp" &&
        mv "$R/etc/fstab.tmp" "$R/etc/fstab"
fi
"""


@dataclass
class RoGx:
    """A simulated GX with a read-only /opt inside a mount namespace."""

    root: Path
    pid: int

    def view(self, rel: str) -> Path:
        """``rel`` under the GX root as the namespace sees it."""
        return Path(f"/proc/{self.pid}/root") / str(self.root).lstrip("/") / rel

    def run(self, *cmd: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *cmd],
                              capture_output=True, text=True, env=env or installer_env(),
                              timeout=120, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}",
                        pytrace=False)
        return proc

    def install(self, bundle: Path, *args: str, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("bash", str(bundle / "install/install.sh"), "--root", str(self.root),
                        *args, env=env, check=check)

    def opt_readonly(self) -> bool:
        for line in Path(f"/proc/{self.pid}/mounts").read_text().splitlines():
            f = line.split()
            if f[1] == f"{self.root}/opt":
                return "ro" in f[3].split(",")
        raise AssertionError("the /opt mount is gone")

    def remount_calls(self) -> int:
        f = self.root / "remount-rw.calls"
        return len(f.read_text().splitlines()) if f.exists() else 0

    def firmware_update(self, page: str) -> None:
        """A new stock PageSettings.qml arrives with a firmware update (rootfs stays ro)."""
        self.run("mount", "-o", "remount,rw", f"{self.root}/opt")
        (self.view(GUI_DIR) / "PageSettings.qml").write_text(page)
        for extra in self.view(GUI_DIR).glob("PageCanBridge*.qml"):
            extra.unlink()
        self.run("mount", "-o", "remount,ro", f"{self.root}/opt")

    def boot(self, timeout: float = 30.0) -> str:
        log = app_dir(self.root) / "conf/boot.log"
        log.unlink(missing_ok=True)
        self.run("bash", str(self.root / "data/rc.local"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.is_file() and "boot: done" in log.read_text():
                return log.read_text()
            time.sleep(0.05)
        pytest.fail(f"boot did not finish: {log.read_text() if log.exists() else ''}")


@pytest.fixture
def ro_gx(tmp_path: Path) -> Iterator[RoGx]:
    require_tool("unshare")
    require_tool("nsenter")
    if os.geteuid() != 0:
        pytest.fail("this test needs root (or a user namespace) for its mount namespace")
    root = make_gx_root(tmp_path / "gx")
    script = root / "opt/victronenergy/swupdate-scripts/remount-rw.sh"
    script.parent.mkdir(parents=True)
    script.write_text(FAKE_REMOUNT_RW)
    script.chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/fstab").write_text(FSTAB)
    staged = tmp_path / "opt-content"
    shutil.move(root / "opt", staged)
    (root / "opt").mkdir()
    ns = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "3600"])
    try:
        gx = RoGx(root, ns.pid)
        deadline = time.monotonic() + 10
        # ready once unshare has exec'd sleep: only then is the new namespace's propagation
        # private (unshare sets it after unshare(2)); a mount made before could reach the host
        comm = Path(f"/proc/{ns.pid}/comm")
        while (Path(f"/proc/{ns.pid}/ns/mnt").resolve() == Path("/proc/self/ns/mnt").resolve()
               or comm.read_text().strip() != "sleep"):
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.01)
        # a fresh tmpfs (its own superblock, only in this namespace), filled, then read-only
        gx.run("mount", "-t", "tmpfs", "-o", "size=16m", "gxrootfs", str(root / "opt"))
        gx.run("cp", "-a", f"{staged}/.", str(root / "opt"))
        gx.run("mount", "-o", "remount,ro", str(root / "opt"))
        yield gx
    finally:
        ns.kill()
        ns.wait()


def test_the_fake_rootfs_refuses_writes_even_for_root(ro_gx: RoGx) -> None:
    assert ro_gx.opt_readonly()
    proc = ro_gx.run("touch", str(ro_gx.root / GUI_DIR / "x"), check=False)
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr
    # outside the namespace the directory is an empty mount point: nothing leaks out
    assert not any((ro_gx.root / "opt").iterdir())


def test_classic_page_installed_on_a_read_only_rootfs(bundle_dir: Path, ro_gx: RoGx) -> None:
    """Issue 15: the classic page was never installed on a real GX (EROFS)."""
    stock = STOCK_PAGE.read_text()
    res = ro_gx.install(bundle_dir)
    assert "WARNING" not in res.stderr, res.stderr
    page = (ro_gx.view(GUI_DIR) / "PageSettings.qml").read_text()
    assert 'description: "CanBridge"' in page
    assert (ro_gx.view(GUI_DIR) / "PageCanBridge.qml").is_file()
    # Victron's script was used once, and the rootfs is left as it was found: read-only, with
    # the fstab that remount-rw.sh rewrote put back
    assert ro_gx.remount_calls() == 1
    assert ro_gx.opt_readonly()
    assert (ro_gx.root / "etc/fstab").read_text() == FSTAB

    # nothing to change: the rootfs is not touched at all
    ro_gx.install(bundle_dir)
    assert ro_gx.remount_calls() == 1 and ro_gx.opt_readonly()

    # a firmware update brings a new stock page; the boot script patches it again
    new_stock = stock.replace('description: qsTr("Firmware")', 'description: qsTr("Firmware!")')
    assert new_stock != stock
    ro_gx.firmware_update(new_stock)
    log = ro_gx.boot()
    assert "boot: classic gui page added again" in log, log
    page = (ro_gx.view(GUI_DIR) / "PageSettings.qml").read_text()
    assert 'description: "CanBridge"' in page and "Firmware!" in page
    assert ro_gx.remount_calls() == 2 and ro_gx.opt_readonly()
    assert (ro_gx.root / "etc/fstab").read_text() == FSTAB

    # uninstall reverts the page, removes ours, and leaves the rootfs read-only
    ro_gx.install(bundle_dir, "--uninstall")
    assert (ro_gx.view(GUI_DIR) / "PageSettings.qml").read_text() == new_stock
    assert not (ro_gx.view(GUI_DIR) / "PageCanBridge.qml").exists()
    assert ro_gx.remount_calls() == 3 and ro_gx.opt_readonly()
    assert (ro_gx.root / "etc/fstab").read_text() == FSTAB


def test_a_rootfs_that_stays_read_only_is_reported(bundle_dir: Path, ro_gx: RoGx) -> None:
    """remount-rw.sh that does not work: a clear warning, nothing half-written."""
    script = ro_gx.view("opt/victronenergy/swupdate-scripts/remount-rw.sh")
    ro_gx.run("mount", "-o", "remount,rw", f"{ro_gx.root}/opt")
    script.write_text("#!/bin/sh\necho nope >&2\nexit 1\n")
    ro_gx.run("mount", "-o", "remount,ro", f"{ro_gx.root}/opt")
    res = ro_gx.install(bundle_dir)
    assert "did not make" in res.stderr and "classic gui page not installed" in res.stderr
    assert "CanBridge" not in (ro_gx.view(GUI_DIR) / "PageSettings.qml").read_text()
    assert ro_gx.opt_readonly()
    assert (ro_gx.root / "etc/fstab").read_text() == FSTAB
    # everything else is installed
    assert (ro_gx.root / "data/rc.local").read_text().endswith(rc_line(ro_gx.root) + "\n")
