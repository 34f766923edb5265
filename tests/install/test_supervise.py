"""The installed services under Debian's real daemontools, against a simulated GX system.

The release bundle (with its vendored dependencies) is installed into a simulated GX root;
``svscan`` runs on that root's ``/service`` exactly as Venus runs it on ``/service``, so
``supervise`` starts each installed ``run`` script and pipes its output into the installed
``log/run`` (``multilog`` writing ``/var/log/<service>/current`` under the root).

The run scripts are the installed ones, unchanged. They read the optional ``conf/env`` of the
installation, which the test writes to point them at the simulated system: this checkout's
test interpreter (it has dbus-python and PyGObject, as Venus OS does), the clean-room
velib_python stand-in, the private dbus-daemon with the settings service stand-in, and the
loopback CAN hub (so ``vecan0`` and ``can1`` open on the loopback link). The web page gets a
free local port through its settings, as a user would set them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.fixtures.canlink import CanLink
from tests.fixtures.venus import SettingsService
from tests.install.conftest import (
    REPO,
    app_dir,
    diff_snapshots,
    installer_env,
    require_tool,
    run_installer,
    snapshot,
)
from tests.install.test_settings import add_setting, get_value

TOOLS = ("svscan", "supervise", "svc", "svstat", "svok", "multilog", "softlimit")
DRIVERS = {"dbus-superb": "Superb/NodeIds", "dbus-sma": "Sma/CanInterface"}


def svstat(service: Path) -> tuple[str, int | None]:
    """('up', pid) / ('down', None) / ('unsupervised', None) of a service directory."""
    res = subprocess.run(["svstat", str(service)], capture_output=True, text=True, check=False)
    m = re.search(r": up \(pid (\d+)\)", res.stdout)
    if m:
        return "up", int(m.group(1))
    if "supervise not running" in res.stdout + res.stderr:
        return "unsupervised", None
    return "down", None


def wait_until(what: str, condition, timeout: float,  # type: ignore[no-untyped-def]
               explain=None) -> float:
    """Poll ``condition`` until it is true; the time it took. Fails with ``what`` (and what
    ``explain()`` says, e.g. svstat and the service's log, when given)."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            detail = ""
            if explain is not None:
                try:
                    detail = "\n" + str(explain())
                except Exception as exc:  # noqa: BLE001 - a failing explanation must not hide the failure
                    detail = f"\n(no details: {exc})"
            pytest.fail(f"timed out after {timeout} s waiting for {what}{detail}", pytrace=False)
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def log_text(root: Path, name: str) -> str:
    current = root / "var/log" / name / "current"
    return current.read_text(errors="replace") if current.exists() else ""


def running_lines(root: Path, name: str) -> int:
    return len(re.findall(rf"{name} \S+ running", log_text(root, name)))


@pytest.fixture
def svscan(gx_root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """svscan on the root's /service, with a bare environment (as at boot on a GX)."""
    for tool in TOOLS:
        require_tool(tool)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    proc = subprocess.Popen(["svscan", str(gx_root / "service")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        proc.wait(10)
        for d in (gx_root / "service").glob("*"):
            subprocess.run(["svc", "-dx", str(d), str(d / "log")], capture_output=True,
                           check=False)
        _gone, alive = psutil.wait_procs(tree, timeout=5)
        for p in alive:  # only processes this fixture started
            p.kill()


def test_services_run_and_come_back_under_supervise(
    vendored_bundle_dir: Path, gx_root: Path, settings_service: SettingsService,
    canlink: CanLink, svscan: subprocess.Popen[bytes],
) -> None:
    # the web page on a free local port (its settings exist before it starts, as after a reboot)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    add_setting(settings_service, "/Settings/CanBridge/Web/Port", port)
    add_setting(settings_service, "/Settings/CanBridge/Web/ListenAddress", "127.0.0.1")
    add_setting(settings_service, "/Settings/CanBridge/Web/PasswordFile",
                str(gx_root / "data/conf/vncpassword.txt"))
    before = snapshot(gx_root)
    env = installer_env(DBUS_SESSION_BUS_ADDRESS=settings_service.daemon.address)
    env.pop("CANBRIDGE_SVOK")  # real svok/svc from here on
    run_installer(vendored_bundle_dir, gx_root, "--services", "superb,sma,web",
                  "--no-can-setup", env=env)
    app = app_dir(gx_root)
    # the drivers' Python packages must come from the bundle's vendor/, not the test venv
    (app / "conf/env").write_text(
        f"PYTHON={sys.executable}\n"
        f"VELIB_PYTHON={REPO}/sim/venus/velib_standin\n"
        f"DBUS_SESSION_BUS_ADDRESS={settings_service.daemon.address}\n"
        f"CANBRIDGE_CANLINK={canlink.address}\n"
        f"PYTHONPATH={REPO}\n"  # after the app and vendor/: only for sim.canlink's interface
        "PYTHONUNBUFFERED=1\n"
    )
    service = gx_root / "service"
    # svscan picks the new services up (it rescans every 5 s) and supervise starts them
    def explain(n: str) -> str:  # what supervise and the service's log say
        return f"svstat: {svstat(service / n)}\nlog:\n{log_text(gx_root, n)[-3000:]}"

    for name, setting in DRIVERS.items():
        wait_until(f"{name} up", lambda n=name: svstat(service / n)[0] == "up", 40,
                   explain=lambda n=name: explain(n))
        wait_until(f"{name} logging that it runs", lambda n=name: running_lines(gx_root, n) >= 1,
                   30)
        assert get_value(settings_service, f"/Settings/CanBridge/{setting}") is not None
    wait_until("canbridge-web up", lambda: svstat(service / "canbridge-web")[0] == "up", 20)
    wait_until("canbridge-web listening",
               lambda: f"listening on http://127.0.0.1:{port}/" in log_text(gx_root,
                                                                          "canbridge-web"), 30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as reply:
        assert reply.status == 200
    superb_pid = svstat(service / "dbus-superb")[1]
    assert superb_pid is not None
    proc = psutil.Process(superb_pid)
    assert proc.cmdline()[1:3] == ["-m", "driver.superb.main"]
    assert proc.cwd() == str(app)
    assert proc.rlimit(psutil.RLIMIT_AS)[0] == 100_000_000  # softlimit, as Venus drivers
    assert proc.rlimit(psutil.RLIMIT_DATA)[0] == 100_000_000
    import_check = subprocess.run(
        [sys.executable, "-c", "import can, canopen, cantools; "
         "print(can.__file__, canopen.__file__, cantools.__file__)"],
        env={**os.environ, "PYTHONPATH": f"{app}:{app}/vendor"}, capture_output=True, text=True,
        check=True)
    assert import_check.stdout.count(f"{app}/vendor/") == 3
    assert "using velib_python from" in log_text(gx_root, "dbus-superb")

    # SIGKILL: supervise starts the driver again within 5 s, and it runs again
    for name in DRIVERS:
        _state, old = svstat(service / name)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        took = wait_until(f"{name} restarted",
                          lambda n=name, o=old: svstat(service / n)[1] not in (None, o), 5)
        assert took < 5
        wait_until(f"{name} running again", lambda n=name: running_lines(gx_root, n) >= 2, 30)

    # uninstall stops everything it started and leaves the root as it was
    pids = [svstat(service / n)[1] for n in (*DRIVERS, "canbridge-web")]
    res = run_installer(vendored_bundle_dir, gx_root, "--uninstall", "--purge", env=env)
    assert "stopped and removed dbus-superb" in res.stdout
    for pid in pids:
        assert pid is not None and not alive(pid), f"driver {pid} still running"
    # supervise and multilog have exited (svscan reaps them at its next scan)
    leftover = [p.pid for p in psutil.Process(svscan.pid).children(recursive=True)
                if alive(p.pid)]
    assert not leftover, f"processes still running: {leftover}"
    diff = diff_snapshots(before, snapshot(gx_root))
    assert not diff, "the root differs after uninstall:\n" + "\n".join(diff)
