"""The simulated SuperB system for benchmarks: private dbus-daemon, settings service, loopback
CAN hub, ``python -m sim.superb`` and ``dbus-superb``, as in the tests (outside pytest)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fixtures.canlink import start_canlink
from tests.fixtures.procs import Proc, python_cmd
from tests.fixtures.venus import SettingsService, start_dbus_daemon
from tests.superb.conftest import MANAGER, Client, Sim, battery_service, settings_xml


class SuperbSystem:
    def __init__(self, settings: dict[str, Any], sim_args: list[str]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="cb-bench-"))
        self.daemon = start_dbus_daemon(self.workdir)
        datadir = self.workdir / "conf"
        datadir.mkdir()
        seed = self.workdir / "seed.xml"
        seed.write_text(settings_xml(settings))
        self.settings = SettingsService(daemon=self.daemon, datadir=datadir, real=False,
                                        seed=seed, log=self.workdir / "settings.log")
        self.settings.start()
        self.link = start_canlink()
        self.env = self.daemon.env(CANBRIDGE_CANLINK=self.link.address, PYTHONUNBUFFERED="1")
        self.procs: list[Proc] = []
        sim_proc = Proc(python_cmd("sim.superb", "--control-port", "0", *sim_args), self.env,
                        "sim")
        self.procs.append(sim_proc)
        self.sim = Sim(sim_proc)
        self.driver = Proc(python_cmd("driver.superb.main"), self.env, "dbus-superb")
        self.procs.append(self.driver)
        self.client = Client(self.daemon.address)
        self.client.wait("manager", lambda: self.client.has(MANAGER), 30)

    def wait_connected(self, nodes: list[int], timeout: float = 30) -> None:
        for n in nodes:
            self.client.wait(f"node {n}", lambda n=n: self.client.value(
                battery_service(n), "/Connected") == 1, timeout)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.client.close()
        self.settings.stop()
        self.link.proc.terminate()
        self.link.proc.wait(5)
        self.daemon.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        time.sleep(0)
