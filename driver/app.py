"""Start-up shared by the CanBridge processes: schema, logging, velib, live settings."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driver import __version__
from driver.logsetup import setup_logging
from driver.schema import Schema, SchemaError, load_schema


@dataclass
class App:
    """What every driver process has once it has started."""

    name: str
    schema: Schema
    velib: Any
    bus: Any
    loop: Any
    settings: Any
    log: logging.Logger


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Keep glibc from giving every thread its own heap arena.

    The processes run a few threads (CAN receive, the SDO loop, the BMS sender, web requests);
    with glibc's default of 8 arenas per core each may keep megabytes of heap resident. Two
    arenas keep a thread that must not wait (dbus-sma's BMS sender) apart from the main loop's
    allocations. dbus-superb asks for one: its threads allocate under the GIL, one at a time,
    so a second arena buys it nothing but a second heap (one arena measured 0.2-0.4 MiB less
    resident memory with 16 batteries, CPU unchanged; docs/BENCHMARKS.md).
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``).

    Start-up (imports, settings and D-Bus introspection, identifying the batteries) leaves freed
    memory in the heap that glibc keeps resident; later allocations are small and steady.
    Trimming after start-up and now and then keeps the resident size at what the process uses
    (docs/BENCHMARKS.md). Returns True when glibc released something; False elsewhere.
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False  # not glibc


def common_args(description: str) -> argparse.ArgumentParser:
    """Arguments every process accepts (on the GX they run with none)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--schema", help="settings schema file (default: the installed one)")
    ap.add_argument("--debug", action="store_true", help="log debug messages from the start")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return ap


def start(name: str, args: argparse.Namespace, prefixes: tuple[str, ...],
          on_change: Callable[[str, Any, Any], None] | None = None,
          on_ready: Callable[[App], None] | None = None, *,
          malloc_arenas: int = 2) -> App | None:
    """Set up logging, the schema, the main loop and the live settings under ``prefixes``.

    Returns None (after logging why) when the schema is invalid: a broken schema stops the
    program with a message naming the setting and the problem.
    """
    limit_malloc_arenas(malloc_arenas)
    log = setup_logging(name, logging.DEBUG if args.debug else logging.INFO)
    try:
        schema = load_schema(args.schema)
    except SchemaError as exc:
        log.critical("%s", exc)
        return None
    from driver.venus import velib as velib_mod
    from driver.venus.dbusconn import exit_on_bus_loss, shared_bus
    from driver.venus.mainloop import MainLoop
    from driver.venus.settings import LiveSettings

    loop = MainLoop()
    velib = velib_mod.load()
    bus = shared_bus()
    exit_on_bus_loss(bus, loop.fail)
    app = App(name=name, schema=schema, velib=velib, bus=bus, loop=loop, settings=None, log=log)
    wanted = schema.under(*prefixes, "General/")

    def ready() -> None:
        log.info("%s %s running", name, __version__)
        if on_ready is not None:
            on_ready(app)

    app.settings = LiveSettings(velib, bus, schema, wanted, on_change=on_change, on_ready=ready)
    app.settings.start()
    return app


def run(app: App | None) -> int:
    """Run the main loop of a started app; exit code for ``sys.exit``."""
    if app is None:
        return 2
    code: int = app.loop.run()
    app.log.info("%s stopped (exit code %d)", app.name, code)
    logging.shutdown()
    sys.stdout.flush()
    return code
