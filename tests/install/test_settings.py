"""The installer and the settings service: the Sunny Island's CAN port profile, --purge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dbus

from tests.fake_gx import make_can_root
from tests.fixtures.venus import SettingsService
from tests.install.conftest import (
    app_dir,
    diff_snapshots,
    installer_env,
    read_state,
    run_installer,
    snapshot,
)

SETTINGS = "com.victronenergy.settings"


def settings_call(svc: SettingsService, path: str, method: str, *args: Any,
                  iface: str = "com.victronenergy.BusItem") -> Any:
    bus = dbus.bus.BusConnection(svc.daemon.address)
    try:
        obj = bus.get_object(SETTINGS, path, introspect=False)
        return obj.get_dbus_method(method, iface)(*args)
    finally:
        bus.close()


def add_setting(svc: SettingsService, path: str, default: Any) -> None:
    group, _, name = path[len("/Settings/"):].rpartition("/")
    kind = "i" if isinstance(default, int) else "s"
    code = settings_call(svc, "/Settings", "AddSetting", group, name, default, kind, 0, 0,
                         iface="com.victronenergy.Settings")
    assert int(code) == 0


def get_value(svc: SettingsService, path: str) -> Any:
    return settings_call(svc, path, "GetValue")


def env_for(svc: SettingsService) -> dict[str, str]:
    return installer_env(DBUS_SESSION_BUS_ADDRESS=svc.daemon.address)


def test_sunny_island_port_gets_500k_without_services(bundle_dir: Path, gx_root: Path,
                                                      settings_service: SettingsService) -> None:
    add_setting(settings_service, "/Settings/Canbus/can0/Profile", 1)
    add_setting(settings_service, "/Settings/Canbus/can1/Profile", 3)
    env = env_for(settings_service)
    # without the Sunny Island bridge no port is touched
    run_installer(bundle_dir, gx_root, env=env)
    assert get_value(settings_service, "/Settings/Canbus/can1/Profile") == 3
    res = run_installer(bundle_dir, gx_root, "--services", "superb,sma", env=env)
    assert "set can1 to 'Up, but no services (500 kbit/s)' (was profile 3)" in res.stdout
    assert get_value(settings_service, "/Settings/Canbus/can1/Profile") == 8
    assert get_value(settings_service, "/Settings/Canbus/can0/Profile") == 1
    state = read_state(gx_root)
    assert (state["can_profile_port"], state["can_profile_old"]) == ("can1", "3")
    again = snapshot(gx_root)
    run_installer(bundle_dir, gx_root, env=env)
    assert not diff_snapshots(again, snapshot(gx_root))
    assert "500 kbit/s without services (was profile 3)" in \
        run_installer(bundle_dir, gx_root, "--status", env=env).stdout
    run_installer(bundle_dir, gx_root, "--uninstall", env=env)
    assert get_value(settings_service, "/Settings/Canbus/can1/Profile") == 3


def test_port_in_use_by_vecan_is_not_changed(bundle_dir: Path, gx_root: Path,
                                             settings_service: SettingsService) -> None:
    add_setting(settings_service, "/Settings/Canbus/can1/Profile", 2)
    res = run_installer(bundle_dir, gx_root, "--services", "sma",
                        env=env_for(settings_service))
    assert "can1 is in use by Venus (profile 2" in res.stderr
    assert get_value(settings_service, "/Settings/Canbus/can1/Profile") == 2
    assert "can_profile_port" not in read_state(gx_root)


def test_superb_port_is_refused_for_the_sunny_island(bundle_dir: Path, gx_root: Path,
                                                     settings_service: SettingsService) -> None:
    add_setting(settings_service, "/Settings/Canbus/can0/Profile", 0)
    res = run_installer(bundle_dir, gx_root, "--services", "superb,sma", "--sma-port", "can0",
                        env=env_for(settings_service))
    assert "needs its own CAN port" in res.stderr
    assert get_value(settings_service, "/Settings/Canbus/can0/Profile") == 0


def test_port_not_managed_by_venus_is_set_up_at_boot(bundle_dir: Path, gx_root: Path,
                                                     settings_service: SettingsService) -> None:
    make_can_root(gx_root, "cerbo-gx-mk1", usb_adapter=True)  # can9: a USB CAN adapter
    res = run_installer(bundle_dir, gx_root, "--services", "sma", "--sma-port", "can9",
                        env=env_for(settings_service))
    assert "can9 is not managed by Venus" in res.stdout
    assert read_state(gx_root)["can_link"] == "can9"


def test_a_port_this_gx_does_not_have_is_refused(bundle_dir: Path, gx_root: Path,
                                                 settings_service: SettingsService) -> None:
    res = run_installer(bundle_dir, gx_root, "--services", "sma", "--sma-port", "vecan1",
                        env=env_for(settings_service))
    assert ("Sunny Island port: CAN interface 'vecan1' does not exist on this GX (CAN "
            "interfaces: can0 (VE.Can port), can1 (BMS-Can port))") in res.stderr
    assert "can_profile_port" not in read_state(gx_root)


def test_no_settings_service_is_reported(bundle_dir: Path, gx_root: Path) -> None:
    res = run_installer(bundle_dir, gx_root, "--services", "sma")
    assert "could not read the CAN profile of can1" in res.stderr
    assert (gx_root / "service/dbus-sma/run").is_file()


def test_purge_removes_canbridge_settings_only(bundle_dir: Path, gx_root: Path,
                                               settings_service: SettingsService) -> None:
    add_setting(settings_service, "/Settings/CanBridge/Superb/NodeIds", "1,2")
    add_setting(settings_service, "/Settings/CanBridge/General/LogLevel", 1)
    add_setting(settings_service, "/Settings/Devices/canbridge_superb_1/ClassAndVrmInstance",
                "battery:512")
    add_setting(settings_service, "/Settings/Devices/superb_1234/ClassAndVrmInstance",
                "battery:513")
    add_setting(settings_service, "/Settings/Devices/other_1/ClassAndVrmInstance", "battery:1")
    add_setting(settings_service, "/Settings/System/TimeZone", "Europe/Amsterdam")
    env = env_for(settings_service)
    run_installer(bundle_dir, gx_root, env=env)
    # a plain uninstall keeps the settings (a later install finds them again)
    run_installer(bundle_dir, gx_root, "--uninstall", env=env)
    assert get_value(settings_service, "/Settings/CanBridge/Superb/NodeIds") == "1,2"
    run_installer(bundle_dir, gx_root, env=env)
    (gx_root / "data/conf/canbridge").mkdir()
    (gx_root / "data/conf/canbridge/sma_energy.json").write_text("{}")
    res = run_installer(bundle_dir, gx_root, "--uninstall", "--purge", env=env)
    assert "removed 4 CanBridge settings" in res.stdout
    assert not (gx_root / "data/conf/canbridge").exists()
    left = get_value(settings_service, "/Settings")
    assert sorted(str(k) for k in left) == ["Devices/other_1/ClassAndVrmInstance",
                                            "System/TimeZone"]
    assert not app_dir(gx_root).exists()
