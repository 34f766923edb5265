"""install.sh details that differ between GX models (issue 15): the GUI service to restart,
the memory limit per architecture, an rc.local that Venus would not run, menu names."""

from __future__ import annotations

import re
from pathlib import Path

from tests.install.conftest import (
    fake_command,
    installer_env,
    rc_line,
    read_state,
    run_installer,
    snapshot,
)
from tests.install.test_install import assert_same_tree


def _svc_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    calls = tmp_path / "svc.log"
    svc = fake_command(tmp_path / "bin", "svc", calls)
    return installer_env(CANBRIDGE_SVC=str(svc), CANBRIDGE_SVOK="true"), calls


def test_gui_restart_on_a_cerbo_or_ekrano_uses_start_gui(bundle_dir: Path, gx_root: Path,
                                                        tmp_path: Path) -> None:
    """Cerbo GX, Ekrano and RPi5 run the GUI as /service/start-gui (START_GUI = "start-gui")."""
    (gx_root / "service/start-gui").mkdir()
    env, calls = _svc_env(tmp_path)
    run_installer(bundle_dir, gx_root, env=env)  # adds the classic page: a GUI restart
    assert f"svc -t {gx_root}/service/start-gui" in calls.read_text().splitlines()
    calls.unlink()
    run_installer(bundle_dir, gx_root, "--uninstall", env=env)
    assert f"svc -t {gx_root}/service/start-gui" in calls.read_text().splitlines()


def test_gui_restart_elsewhere_uses_gui(bundle_dir: Path, gx_root: Path, tmp_path: Path) -> None:
    (gx_root / "service/gui").mkdir()
    env, calls = _svc_env(tmp_path)
    run_installer(bundle_dir, gx_root, env=env)
    lines = calls.read_text().splitlines()
    assert f"svc -t {gx_root}/service/gui" in lines
    assert not any("start-gui" in ln for ln in lines)


def _limits(root: Path, name: str) -> dict[str, int]:
    run = (root / "service" / name / "run").read_text()
    m = re.search(r"^exec softlimit (.*) \"\$PYTHON\"", run, re.M)
    assert m, run
    args = m.group(1).split()
    return {args[i]: int(args[i + 1]) for i in range(0, len(args), 2)}


def test_memory_limit_is_four_times_larger_on_aarch64(bundle_dir: Path, gx_root: Path,
                                                      tmp_path: Path) -> None:
    """Victron's daemontools class multiplies softlimit -a by 4 on aarch64 (Venus 3.70+)."""
    run_installer(bundle_dir, gx_root, env=installer_env(CANBRIDGE_ARCH="armv7l"))
    for name in ("dbus-superb", "canbridge-web"):
        assert _limits(gx_root, name) == {"-d": 100_000_000, "-s": 1_000_000, "-a": 100_000_000}
    other = tmp_path / "ekrano"
    from tests.install.conftest import make_gx_root

    make_gx_root(other)
    run_installer(bundle_dir, other, env=installer_env(CANBRIDGE_ARCH="aarch64"))
    for name in ("dbus-superb", "canbridge-web"):
        assert _limits(other, name) == {"-d": 100_000_000, "-s": 1_000_000, "-a": 400_000_000}


def test_a_non_executable_rc_local_is_made_executable(bundle_dir: Path, gx_root: Path) -> None:
    """Venus runs /data/rc.local only if it is executable (custom-rc-late.sh: [ -x ... ])."""
    rc = gx_root / "data/rc.local"
    rc.write_text("#!/bin/sh\necho mine\n")
    rc.chmod(0o644)
    before = snapshot(gx_root)
    res = run_installer(bundle_dir, gx_root)
    assert rc.read_text() == "#!/bin/sh\necho mine\n" + rc_line(gx_root) + "\n"
    assert rc.stat().st_mode & 0o111 == 0o111
    assert "was not executable" in res.stderr
    assert read_state(gx_root)["rc_made_executable"] == "1"
    # a second run keeps it so and warns no more
    res = run_installer(bundle_dir, gx_root)
    assert "was not executable" not in res.stderr
    # uninstall gives back the file as it was, mode included
    run_installer(bundle_dir, gx_root, "--uninstall")
    assert_same_tree(before, snapshot(gx_root))


def test_messages_use_the_menu_names_of_venus_3_70(bundle_dir: Path, gx_root: Path) -> None:
    (gx_root / "data/rc.local.disabled").write_text("#!/bin/bash\n")
    res = run_installer(bundle_dir, gx_root)
    assert "Settings > General > Support status" in res.stderr
    assert "Re-enable custom startup scripts" in res.stderr
    remote = (Path(__file__).resolve().parents[2] / "install/remote-install.sh").read_text()
    assert "Access & Security" in remote


def test_installer_offers_the_can_ports_it_found_on_a_cerbo(bundle_dir: Path,
                                                            gx_root: Path) -> None:
    """Issue 15: install.sh hard-coded vecan0/can1; it now lists what this GX has."""
    res = run_installer(bundle_dir, gx_root)
    assert "CAN ports found on this GX:" in res.stdout
    assert "  can0 (VE.Can port)\n" in res.stdout
    assert "  can1 (BMS-Can port, bms-only)\n" in res.stdout
    assert "'auto' here: SuperB batteries on can0, Sunny Island on can1." in res.stdout
    assert read_state(gx_root)["sma_port"] == "auto"


def test_installer_offers_the_can_ports_it_found_on_an_ekrano(bundle_dir: Path,
                                                              tmp_path: Path) -> None:
    from tests.install.conftest import make_gx_root

    root = make_gx_root(tmp_path / "ekrano", model="ekrano")
    res = run_installer(bundle_dir, root, env=installer_env(CANBRIDGE_ARCH="aarch64"))
    assert "  vecan0 (VE.Can port 1)\n" in res.stdout
    assert "  vecan1 (VE.Can port 2, classic-and-hv)\n" in res.stdout
    assert "'auto' here: SuperB batteries on vecan0, Sunny Island on vecan1." in res.stdout
