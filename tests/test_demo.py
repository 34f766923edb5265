"""``make demo``: the simulated system starts, shows live values, and leaves nothing behind."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nothing listens on now (tests run in parallel: no fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_for_a_duration_and_leaves_no_process(tmp_path):
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "sim.demo", "--duration", "20", "--web-port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(re.fullmatch(r"DBUS_SESSION_BUS_ADDRESS=unix:path=\S+", ln) for ln in lines)
    logs = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("Logs: "))
    assert 20 <= elapsed < 60
    # Status lines were printed while it ran.
    assert sum(1 for ln in lines if re.match(r"\[\s*\d+ s\] ", ln)) >= 3
    # Nothing of the demo is still running (every child had the workdir or its bus on its
    # command line or in its environment).
    leftovers = []
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + " ".join(
                f"{k}={v}" for k, v in (p.info["environ"] or {}).items())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if logs in text:
            leftovers.append(p.info["pid"])
    assert leftovers == []
    assert not Path(logs).exists(), "a clean run removes its temporary directory"
