"""Issue 11: an exception in a GLib callback of dbus-superb (its tick) must not leave the process
up doing nothing (PyGObject silently removes a timeout whose callback raised): it is logged with
its traceback and the process exits with code 1 for its supervisor."""

from __future__ import annotations

import time

from driver.superb.main import INJECT_ENV
from tests.superb.conftest import System, battery_service


def test_exception_in_tick_exits_for_the_supervisor(superb: System) -> None:
    inject = superb.daemon.workdir / "inject"
    inject.write_text("")
    superb.env[INJECT_ENV] = str(inject)
    superb.start_sim("--nodes", "1", "--hold")
    driver = superb.start_driver()
    c = superb.client
    c.wait("node 1", lambda: c.value(battery_service(1), "/Connected") == 1, 15)
    t0 = time.monotonic()
    inject.write_text("tick")
    driver.wait_for(r"Traceback", 5)
    driver.wait_for(r"InjectedFault: injected into the tick", 5)
    deadline = time.monotonic() + 10
    while driver.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.proc.poll() == 1, "dbus-superb stayed up after its tick raised"
    assert time.monotonic() - t0 < 5


def test_sdo_loop_failure_exits_for_the_supervisor(superb: System) -> None:
    """Every battery is read by the port's one SDO thread: if that thread fails (a bug outside
    any poll task's guard), the process must not stay up with nothing read; it exits with
    code 1 at its next tick."""
    inject = superb.daemon.workdir / "inject"
    inject.write_text("")
    superb.env[INJECT_ENV] = str(inject)
    superb.start_sim("--nodes", "1", "--hold")
    driver = superb.start_driver()
    c = superb.client
    c.wait("node 1", lambda: c.value(battery_service(1), "/Connected") == 1, 15)
    t0 = time.monotonic()
    inject.write_text("sdoloop")
    driver.wait_for(r"RuntimeError: injected into the SDO loop", 5)
    driver.wait_for(r"the SDO loop thread ended", 5)
    deadline = time.monotonic() + 10
    while driver.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.proc.poll() == 1, "dbus-superb stayed up without its SDO loop"
    assert time.monotonic() - t0 < 5
