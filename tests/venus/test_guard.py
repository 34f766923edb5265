"""The GLib callback guard (driver/venus/mainloop.py ``guarded``) in a real process: PyGObject
alone removes a raising timeout and leaves the process up doing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import logging, sys
    from gi.repository import GLib
    from driver.venus.mainloop import MainLoop, guarded
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    mode = sys.argv[1]
    loop = MainLoop()
    loop.on_stop(lambda: print("stop callback ran", flush=True))
    calls = []
    def tick():
        calls.append(1)
        print("tick", len(calls), flush=True)
        if len(calls) == 2:
            raise ZeroDivisionError("boom")
        if len(calls) == 5:
            loop.stop()
        return True
    if mode == "bare":
        GLib.timeout_add(20, tick)
        GLib.timeout_add(1500, lambda: (print("still up, doing nothing", flush=True),
                                         loop.stop()))
    elif mode == "exit":
        GLib.timeout_add(20, guarded(tick, "tick"))
    else:
        GLib.timeout_add(20, guarded(tick, "tick", exit_on_error=False, error_result=True))
    sys.exit(loop.run())
""")


def run(mode: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_without_guard_the_timeout_silently_dies() -> None:
    """What the guard is for: the process stays up, the timer never runs again."""
    r = run("bare")
    assert "tick 2" in r.stdout and "tick 3" not in r.stdout
    assert "still up, doing nothing" in r.stdout


def test_guard_logs_traceback_and_exits_for_the_supervisor() -> None:
    r = run("exit")
    assert r.returncode == 1
    assert "Traceback" in r.stdout and "ZeroDivisionError: boom" in r.stdout
    assert "error in tick" in r.stdout
    assert "tick failed (ZeroDivisionError: boom); exiting so the supervisor" in r.stdout
    assert "stop callback ran" in r.stdout
    assert "tick 3" not in r.stdout


def test_guard_without_exit_keeps_the_timeout() -> None:
    r = run("keep")
    assert r.returncode == 0
    assert "ZeroDivisionError: boom" in r.stdout and "tick 5" in r.stdout
