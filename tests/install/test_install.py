"""install.sh in a simulated GX root: install, re-install, upgrade, firmware update, uninstall."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.install.conftest import (
    APP_REL,
    STOCK_PAGE,
    app_dir,
    diff_snapshots,
    fake_command,
    installer_env,
    make_gx_root,
    rc_line,
    read_state,
    run_installer,
    snapshot,
)

GUI_DIR = "opt/victronenergy/gui/qml"
NEW_STOCK_PAGE = STOCK_PAGE.read_text().replace(
    '\t\tMbSubMenu {\n\t\t\tdescription: qsTr("Debug")',
    '\t\tMbSubMenu {\n\t\t\tdescription: qsTr("Display & language")\n'
    "\t\t\tsubpage: Component { PageSettingsDisplay {} }\n\t\t}\n\n"
    '\t\tMbSubMenu {\n\t\t\tdescription: qsTr("Debug")',
)


def assert_same_tree(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    diff = diff_snapshots(before, after)
    assert not diff, "the root differs:\n" + "\n".join(diff)


def run_boot(root: Path, timeout: float = 20.0) -> str:
    """Run /data/rc.local as the GX does at boot and wait for the boot script to finish."""
    log = app_dir(root) / "conf/boot.log"
    log.unlink(missing_ok=True)
    subprocess.run(["bash", str(root / "data/rc.local")], env=installer_env(), check=True,
                   timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and "boot: done" in log.read_text():
            return log.read_text()
        time.sleep(0.05)
    pytest.fail(f"boot script did not finish; log:\n{log.read_text() if log.exists() else ''}")


def firmware_update(root: Path, version: str = "v3.70~5", page: str = NEW_STOCK_PAGE) -> None:
    """Everything outside /data is replaced, as a Venus OS firmware update does."""
    for child in root.iterdir():
        if child.name != "data":
            shutil.rmtree(child)
    make_gx_root_keep_data(root, version, page)


def make_gx_root_keep_data(root: Path, version: str, page: str) -> None:
    settings = (root / "data/conf/settings.xml").read_bytes()
    make_gx_root(root, version=version, page=page)
    (root / "data/conf/settings.xml").write_bytes(settings)


# ---------------------------------------------------------------------------------------------


def test_fresh_install(bundle_dir: Path, gx_root: Path) -> None:
    res = run_installer(bundle_dir, gx_root)
    app = app_dir(gx_root)
    assert (app / "VERSION").read_text() == (bundle_dir / "VERSION").read_text()
    assert (app / "driver/superb/main.py").is_file()
    assert (app / "settings_schema.json").is_file()
    assert not (app / "sim").exists()
    # rc.local: created with a shebang, mode 755, exactly one line of ours
    rc = gx_root / "data/rc.local"
    assert rc.read_text() == "#!/bin/bash\n" + rc_line(gx_root) + "\n"
    assert rc.stat().st_mode & 0o777 == 0o755
    # the default parts: SuperB driver and web page, not the Sunny Island bridge
    assert sorted(p.name for p in (gx_root / "service").iterdir()) == [
        "canbridge-web", "dbus-superb"]
    for name, module in (("dbus-superb", "driver.superb.main"), ("canbridge-web", "webui.main")):
        run = (gx_root / "service" / name / "run").read_text()
        assert run.startswith("#!/bin/sh\n")
        assert "exec 2>&1\n" in run
        assert f"APP='{app}'" in run
        assert ("exec softlimit -d 100000000 -s 1000000 -a 100000000 "
                f'"$PYTHON" -m {module}\n') in run
        assert 'PYTHONPATH="$APP:$APP/vendor' in run
        log = (gx_root / "service" / name / "log/run").read_text()
        assert f"exec multilog t s25000 n4 '{gx_root}/var/log/{name}'" in log
        for f in ("run", "log/run"):
            assert (gx_root / "service" / name / f).stat().st_mode & 0o777 == 0o755
            assert (gx_root / "service" / name / f).read_bytes() == \
                (app / "service" / name / f).read_bytes()
    # gui-v2 plugin: /data/apps/enabled/<Name> -> the app, JSON at <Name>/gui-v2/<Name>.json
    link = gx_root / "data/apps/enabled/CanBridge"
    assert link.is_symlink() and str(link.readlink()) == "../available/canbridge"
    assert (link / "gui-v2/CanBridge.json").is_file()
    # classic gui: patched, original kept, page installed
    page = (gx_root / GUI_DIR / "PageSettings.qml").read_text()
    assert 'description: "CanBridge"' in page
    assert (app / "conf/classic-gui/PageSettings.qml.orig").read_text() == STOCK_PAGE.read_text()
    assert (gx_root / GUI_DIR / "PageCanBridge.qml").is_file()
    state = read_state(gx_root)
    assert state["parts"] == "superb,web"
    assert state["created_dirs"] == "/data/apps,/data/apps/available,/data/apps/enabled"
    assert "installed CanBridge" in res.stdout
    # the CAN port is only touched for the Sunny Island bridge
    assert "can_profile_port" not in state


def test_second_install_is_byte_identical(bundle_dir: Path, gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root)
    before = snapshot(gx_root)
    watched = [gx_root / "data/rc.local", gx_root / "service/dbus-superb/run",
               gx_root / "service/dbus-superb/log/run", gx_root / GUI_DIR / "PageSettings.qml",
               app_dir(gx_root) / "conf/install.conf"]
    mtimes = [p.stat().st_mtime_ns for p in watched]
    time.sleep(0.02)
    res = run_installer(bundle_dir, gx_root)
    assert_same_tree(before, snapshot(gx_root))
    assert [p.stat().st_mtime_ns for p in watched] == mtimes, "files were rewritten"
    assert (gx_root / "data/rc.local").read_text().count("# CanBridge") == 1
    assert "is installed; configuration updated" in res.stdout


def test_run_from_installed_copy_reconfigures(bundle_dir: Path, gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root)
    run_installer(app_dir(gx_root), gx_root, "--services", "superb")
    assert sorted(p.name for p in (gx_root / "service").iterdir()) == ["dbus-superb"]
    assert not (app_dir(gx_root) / "service/canbridge-web").exists()
    assert (app_dir(gx_root) / "driver/superb/main.py").is_file()


def make_new_version(bundle: Path, dest: Path, version: str) -> Path:
    """A copy of ``bundle`` that claims another version and has a changed file."""
    new = dest / f"canbridge-{version}"
    shutil.copytree(bundle, new, symlinks=True)
    (new / "VERSION").write_text(version + "\n")
    main = new / "driver/superb/main.py"
    main.write_text(main.read_text() + "\n# upgraded\n")
    sums = subprocess.run(
        "find . -type f ! -name SHA256SUMS | sed 's|^\\./||' | sort | xargs sha256sum",
        shell=True, cwd=new, capture_output=True, text=True, check=True).stdout
    (new / "SHA256SUMS").write_text(sums)
    return new


def test_upgrade_keeps_settings_and_choices(bundle_dir: Path, gx_root: Path,
                                            tmp_path: Path) -> None:
    run_installer(bundle_dir, gx_root, "--services", "superb,sma,web", "--no-can-setup")
    app = app_dir(gx_root)
    (app / "conf/env").write_text("PYTHON=/usr/bin/python3\n")
    settings = (gx_root / "data/conf/settings.xml").read_bytes()
    new = make_new_version(bundle_dir, tmp_path, "0.2.0")
    calls = tmp_path / "svc.log"
    svc = fake_command(tmp_path / "bin", "svc", calls)
    res = run_installer(new, gx_root, env=installer_env(CANBRIDGE_SVC=str(svc),
                                                        CANBRIDGE_SVOK="true"))
    assert "upgraded to CanBridge 0.2.0; settings kept" in res.stdout
    assert (app / "VERSION").read_text() == "0.2.0\n"
    assert (app / "driver/superb/main.py").read_text().endswith("# upgraded\n")
    assert (app / "conf/env").read_text() == "PYTHON=/usr/bin/python3\n"
    assert (gx_root / "data/conf/settings.xml").read_bytes() == settings
    state = read_state(gx_root)
    assert state["parts"] == "superb,sma,web"
    assert state["version"] == "0.2.0"
    assert state["can_setup"] == "0"
    assert not list(gx_root.glob(f"{APP_REL}.*")), "staging directories left behind"
    # running services are restarted onto the new code
    restarted = calls.read_text().splitlines()
    for name in ("dbus-superb", "dbus-sma", "canbridge-web"):
        assert f"svc -t {gx_root}/service/{name}" in restarted
    assert (gx_root / "data/rc.local").read_text().count("# CanBridge") == 1


def test_firmware_update_brings_everything_back(bundle_dir: Path, gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root, "--services", "superb,sma,web", "--no-can-setup")
    installed = snapshot(gx_root)
    firmware_update(gx_root)
    assert not (gx_root / "service/dbus-superb").exists()
    assert "CanBridge" not in (gx_root / GUI_DIR / "PageSettings.qml").read_text()
    before_uninstall_stock = snapshot(gx_root)
    log = run_boot(gx_root)
    assert "boot: classic gui page added again" in log
    after = snapshot(gx_root)
    for name in ("dbus-superb", "dbus-sma", "canbridge-web"):
        for f in ("run", "log/run"):
            assert after[f"service/{name}/{f}"] == installed[f"service/{name}/{f}"]
    # the new stock page is patched, and it is the new stock that is kept as the original
    page = (gx_root / GUI_DIR / "PageSettings.qml").read_text()
    assert 'description: "CanBridge"' in page and "Display & language" in page
    assert (app_dir(gx_root) / "conf/classic-gui/PageSettings.qml.orig").read_text() == \
        NEW_STOCK_PAGE
    assert (gx_root / GUI_DIR / "PageCanBridge.qml").is_file()
    # a second boot changes nothing
    run_boot(gx_root)
    snap = snapshot(gx_root)
    snap.pop(f"{APP_REL}/conf/boot.log")
    after.pop(f"{APP_REL}/conf/boot.log")
    assert_same_tree(after, snap)
    # and the uninstaller gives back the new firmware's stock files
    run_installer(bundle_dir, gx_root, "--uninstall")
    expected = dict(before_uninstall_stock)
    for key in list(expected):
        if key.startswith(("data/apps", "data/rc.local")):
            expected.pop(key)
    assert_same_tree(expected, snapshot(gx_root))


@pytest.mark.parametrize("layout", ["bare", "existing-rc-local", "other-apps"])
def test_uninstall_leaves_the_root_as_before(bundle_dir: Path, gx_root: Path,
                                             layout: str) -> None:
    if layout == "existing-rc-local":
        rc = gx_root / "data/rc.local"
        rc.write_text("#!/bin/sh\n# user's own start-up\nip link set can1 up")  # no final newline
        rc.chmod(0o700)
    if layout == "other-apps":
        (gx_root / "data/apps/available/other/gui-v2").mkdir(parents=True)
        (gx_root / "data/apps/enabled").mkdir(parents=True)
        (gx_root / "data/apps/enabled/other").symlink_to("../available/other")
    before = snapshot(gx_root)
    run_installer(bundle_dir, gx_root, "--services", "superb,sma,web", "--no-can-setup")
    if layout == "existing-rc-local":
        assert (gx_root / "data/rc.local").read_text() == (
            "#!/bin/sh\n# user's own start-up\nip link set can1 up\n" + rc_line(gx_root) + "\n")
    # the services have been running: they left logs behind
    for name in ("dbus-superb", "dbus-sma"):
        (gx_root / "var/log" / name).mkdir()
        (gx_root / "var/log" / name / "current").write_text("log\n")
    res = run_installer(bundle_dir, gx_root, "--uninstall")
    assert "CanBridge removed" in res.stdout
    assert_same_tree(before, snapshot(gx_root))
    # a second uninstall is harmless
    res = run_installer(bundle_dir, gx_root, "--uninstall")
    assert "not installed" in res.stdout
    assert_same_tree(before, snapshot(gx_root))


def test_rc_local_disabled_is_respected(bundle_dir: Path, gx_root: Path) -> None:
    disabled = gx_root / "data/rc.local.disabled"
    disabled.write_text("#!/bin/bash\necho mine\n")
    disabled.chmod(0o755)
    before = snapshot(gx_root)
    res = run_installer(bundle_dir, gx_root)
    assert not (gx_root / "data/rc.local").exists(), "created rc.local although disabled"
    assert disabled.read_text() == "#!/bin/bash\necho mine\n" + rc_line(gx_root) + "\n"
    assert "start-up scripts are disabled" in res.stderr
    assert (gx_root / "service/dbus-superb/run").is_file()
    status = run_installer(bundle_dir, gx_root, "--status").stdout
    assert "start-up scripts are DISABLED" in status
    run_installer(bundle_dir, gx_root)
    assert disabled.read_text().count("# CanBridge") == 1
    run_installer(bundle_dir, gx_root, "--uninstall")
    assert_same_tree(before, snapshot(gx_root))


def test_status(bundle_dir: Path, gx_root: Path) -> None:
    assert "not installed" in run_installer(bundle_dir, gx_root, "--status").stdout
    run_installer(bundle_dir, gx_root)
    out = run_installer(bundle_dir, gx_root, "--status").stdout
    assert "CanBridge 0.1.0 in /data/apps/available/canbridge (Venus OS v3.60~13)" in out
    assert "dbus-superb: in /service, not supervised yet" in out
    assert "dbus-sma: not enabled" in out
    assert "boot: /data/rc.local runs install/boot.sh" in out
    assert "gui-v2 plugin: enabled as CanBridge" in out
    assert "classic gui: patched" in out
    assert "CAN ports: can0 (VE.Can port), can1 (BMS-Can port)" in out


def test_parts_can_be_switched_off(bundle_dir: Path, gx_root: Path, tmp_path: Path) -> None:
    run_installer(bundle_dir, gx_root)
    before = snapshot(gx_root)
    calls = tmp_path / "svc.log"
    svc = fake_command(tmp_path / "bin", "svc", calls)
    svok = tmp_path / "bin/svok"  # "supervised", until a service has been moved aside
    svok.write_text('#!/bin/sh\ncase $1 in *.removed*) exit 1 ;; esac\nexit 0\n')
    svok.chmod(0o755)
    (gx_root / "service/gui").mkdir()
    env = installer_env(CANBRIDGE_SVC=str(svc), CANBRIDGE_SVOK=str(svok))
    run_installer(bundle_dir, gx_root, "--services", "none", "--no-gui-v2", "--no-classic-gui",
                  env=env)
    assert [p.name for p in (gx_root / "service").iterdir()] == ["gui"]
    assert not (gx_root / "data/apps/enabled/CanBridge").exists()
    assert (gx_root / GUI_DIR / "PageSettings.qml").read_text() == STOCK_PAGE.read_text()
    assert not (gx_root / GUI_DIR / "PageCanBridge.qml").exists()
    log = calls.read_text()
    assert f"svc -d {gx_root}/service/dbus-superb" in log
    assert (f"svc -dx {gx_root}/service/.dbus-superb.removed "
            f"{gx_root}/service/.dbus-superb.removed/log") in log
    assert f"svc -t {gx_root}/service/gui" in log, "the gui was not restarted"
    run_installer(bundle_dir, gx_root, "--services", "superb,web", "--gui-v2", "--classic-gui",
                  env=env)
    (gx_root / "service/gui").rmdir()
    assert_same_tree(before, snapshot(gx_root))


def test_classic_gui_left_alone_when_firmware_replaced_it(bundle_dir: Path,
                                                          gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root)
    page = gx_root / GUI_DIR / "PageSettings.qml"
    page.write_text(NEW_STOCK_PAGE)  # a firmware update, before any reboot ran boot.sh
    res = run_installer(bundle_dir, gx_root, "--uninstall")
    assert page.read_text() == NEW_STOCK_PAGE
    assert "left as it is" in res.stderr
    assert not (gx_root / GUI_DIR / "PageCanBridge.qml").exists()


def test_classic_gui_damaged_block_falls_back_to_saved_original(bundle_dir: Path,
                                                                gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root)
    page = gx_root / GUI_DIR / "PageSettings.qml"
    page.write_text(page.read_text().replace("// CanBridge end", "// someone was here"))
    res = run_installer(bundle_dir, gx_root, "--uninstall")
    assert page.read_text() == STOCK_PAGE.read_text()
    assert "restored the saved original" in res.stderr


def test_classic_gui_unexpected_layout_is_not_patched(bundle_dir: Path, tmp_path: Path) -> None:
    odd = "import QtQuick 2\nMbPage {\n\ttitle: \"Settings\"\n}\n"
    root = make_gx_root(tmp_path / "gx", page=odd)
    before = snapshot(root)
    res = run_installer(bundle_dir, root)
    assert "classic gui page not installed" in res.stderr
    assert (root / GUI_DIR / "PageSettings.qml").read_text() == odd
    assert (root / "service/dbus-superb/run").is_file()
    run_installer(bundle_dir, root, "--uninstall")
    assert_same_tree(before, snapshot(root))


def test_damaged_bundle_is_refused(bundle_dir: Path, gx_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    (bad / "driver/app.py").write_text("broken\n")
    before = snapshot(gx_root)
    res = run_installer(bad, gx_root, check=False)
    assert res.returncode != 0
    assert "checksums do not match" in res.stderr
    assert_same_tree(before, snapshot(gx_root))


def test_not_a_gx_and_old_python_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    res = run_installer(bundle_dir, tmp_path, check=False)
    assert res.returncode != 0 and "does not look like a GX" in res.stderr
    root = make_gx_root(tmp_path / "gx", version="v3.50")
    old_python = tmp_path / "python3.8"  # answers "3.8" and fails the version check
    old_python.write_text('#!/bin/sh\ncase "$*" in *print*) echo 3.8; exit 0 ;; esac\nexit 1\n')
    old_python.chmod(0o755)
    res = run_installer(bundle_dir, root, check=False,
                        env=installer_env(CANBRIDGE_PYTHON=str(old_python)))
    assert res.returncode != 0
    assert "Python 3.8 is too old: CanBridge needs Venus OS v3.60 or later" in res.stderr
    assert "this is Venus OS v3.50" in res.stderr
    assert not (root / APP_REL).exists()


def test_remote_install_over_ssh(bundle_dir: Path, gx_root: Path, tmp_path: Path) -> None:
    """remote-install.sh with ssh replaced by a local shell (same command, same stdin)."""
    archive = tmp_path / "canbridge-0.1.0.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(bundle_dir.parent), bundle_dir.name],
                   check=True)
    subprocess.run(f"sha256sum {archive.name} > {archive.name}.sha256", shell=True,
                   cwd=tmp_path, check=True)
    calls = tmp_path / "ssh.log"
    ssh = tmp_path / "bin/ssh"
    ssh.parent.mkdir()
    # a stand-in for ssh: record the destination, run the remote command with bash locally
    ssh.write_text('#!/bin/bash\necho "ssh $1 $2 $3 $4 $5" >> "' + str(calls) + '"\n'
                   'shift 5\nexec bash -c "$1"\n')
    ssh.chmod(0o755)
    env = installer_env(CANBRIDGE_SSH=str(ssh), CANBRIDGE_ROOT=str(gx_root))
    res = subprocess.run(
        ["bash", str(bundle_dir / "install/remote-install.sh"), "--bundle", str(archive),
         "192.0.2.7", "--root", str(gx_root), "--services", "superb,sma"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert calls.read_text() == "ssh -p 22 -o ConnectTimeout=15 root@192.0.2.7\n"
    assert "installed CanBridge 0.1.0" in res.stdout
    assert read_state(gx_root)["parts"] == "superb,sma"
    assert not list((gx_root / "data").glob(".canbridge-install.*")), "temporary dir left"
    # a tampered archive is refused before anything is sent
    archive.write_bytes(archive.read_bytes() + b"x")
    res = subprocess.run(
        ["bash", str(bundle_dir / "install/remote-install.sh"), "--bundle", str(archive),
         "192.0.2.7"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode != 0 and "does not match" in res.stderr
