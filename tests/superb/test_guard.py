"""Issue 11: an exception in a GLib callback of dbus-superb (its tick) must not leave the process
up doing nothing (PyGObject silently removes a timeout whose callback raised): it is logged with
its traceback and the process exits with code 1 for its supervisor."""

from __future__ import annotations

import time

from driver.superb.main import INJECT_ENV
from tests.superb.conftest import System, battery_service


def _injection_exits_for_the_supervisor(superb: System, stage: str, *logged: str) -> None:
    """Start dbus-superb with one battery, inject a fault at ``stage``; the lines ``logged``
    must appear and the process must exit with code 1 within 5 s."""
    inject = superb.daemon.workdir / "inject"
    inject.write_text("")
    superb.env[INJECT_ENV] = str(inject)
    superb.start_sim("--nodes", "1", "--hold")
    driver = superb.start_driver()
    c = superb.client
    c.wait("node 1", lambda: c.value(battery_service(1), "/Connected") == 1, 15)
    t0 = time.monotonic()
    inject.write_text(stage)
    for pattern in logged:
        driver.wait_for(pattern, 5)
    deadline = time.monotonic() + 10
    while driver.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.proc.poll() == 1, f"dbus-superb stayed up after the fault in its {stage}"
    assert time.monotonic() - t0 < 5


def test_exception_in_tick_exits_for_the_supervisor(superb: System) -> None:
    _injection_exits_for_the_supervisor(superb, "tick", r"Traceback",
                                        r"InjectedFault: injected into the tick")


def test_sdo_loop_failure_exits_for_the_supervisor(superb: System) -> None:
    """Every battery is read by the port's one SDO thread: if that thread fails (a bug outside
    any poll task's guard), the process must not stay up with nothing read; it exits with
    code 1 at its next tick."""
    _injection_exits_for_the_supervisor(superb, "sdoloop",
                                        r"RuntimeError: injected into the SDO loop",
                                        r"the SDO loop thread ended")
