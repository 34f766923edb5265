"""Where velib_python comes from.

Drivers are written against Victron's velib_python API (``vedbus``, ``settingsdevice``,
``dbusmonitor``, ``ve_utils``) like every Venus driver. velib_python is on no package registry,
so this module resolves it, in order:

1. ``$VELIB_PYTHON`` (a checkout, for testing against the real thing);
2. the GX's own copy, ``/opt/victronenergy/dbus-systemcalc-py/ext/velib_python``;
3. the project's clean-room stand-in, ``sim/venus/velib_standin`` (off the GX).

It is the only module that puts velib_python on ``sys.path``; it logs which copy is used.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

log = logging.getLogger("canbridge.venus")

GX_VELIB = Path("/opt/victronenergy/dbus-systemcalc-py/ext/velib_python")
STANDIN = Path(__file__).resolve().parents[2] / "sim" / "venus" / "velib_standin"


@dataclass(frozen=True)
class Velib:
    """The velib_python modules in use and where they came from."""

    source: str
    path: Path
    vedbus: ModuleType
    settingsdevice: ModuleType
    dbusmonitor: ModuleType
    ve_utils: ModuleType


def resolve() -> tuple[str, Path]:
    """(source, directory) of the velib_python to use."""
    env = os.environ.get("VELIB_PYTHON")
    if env:
        path = Path(env)
        if not (path / "vedbus.py").is_file():
            raise RuntimeError(f"VELIB_PYTHON={env} does not contain vedbus.py")
        return "VELIB_PYTHON", path
    if (GX_VELIB / "vedbus.py").is_file():
        return "GX", GX_VELIB
    return "stand-in", STANDIN


_loaded: Velib | None = None


def load() -> Velib:
    """Import velib_python (once per process) and return its modules."""
    global _loaded
    if _loaded is not None:
        return _loaded
    source, path = resolve()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    mods = {}
    for name in ("vedbus", "settingsdevice", "dbusmonitor", "ve_utils"):
        mod = importlib.import_module(name)
        got = Path(getattr(mod, "__file__", "") or "").resolve().parent
        if got != path.resolve():
            raise RuntimeError(f"{name} was imported from {got}, expected {path}")
        mods[name] = mod
    log.info("using velib_python from %s (%s)", path, source)
    _loaded = Velib(source=source, path=path, **mods)
    return _loaded
