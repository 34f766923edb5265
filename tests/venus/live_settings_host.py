"""Child process for tests: runs LiveSettings and reports what it sees as JSON lines.

Commands on stdin (one per line): ``instance <uid> <class> <default>``, ``get <path>``,
``rejected``, ``refusals``, ``set <path> <json value>``, ``publish <service name>`` (a
service made by ``create_service``, which carries the refusal paths), ``quit``.
"""

from __future__ import annotations

import json
import sys
import threading

from gi.repository import GLib

from driver.schema import load_schema
from driver.venus import velib as velib_mod
from driver.venus.dbusconn import call_soon, shared_bus
from driver.venus.mainloop import MainLoop
from driver.venus.settings import LiveSettings


def main() -> None:
    loop = MainLoop()
    schema = load_schema()
    velib = velib_mod.load()
    bus = shared_bus()

    def out(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def changed(path: str, old: object, new: object) -> None:
        out({"event": "changed", "path": path, "old": old, "new": new})

    settings = LiveSettings(velib, bus, schema, schema.under("Sma/", "Superb/"),
                            on_change=changed, on_ready=lambda: out({"event": "ready"}))
    settings.start()
    services: list[object] = []

    def handle(line: str) -> None:
        cmd, *args = line.split(" ", 3)
        if cmd == "instance":
            out({"instance": settings.device_instance(args[0], args[1], int(args[2]))})
        elif cmd == "get":
            out({"value": settings[args[0]]})
        elif cmd == "rejected":
            out({"rejected": settings.rejected})
        elif cmd == "refusals":
            out({"refusals": settings.refusal_list(), "write_backs": settings.write_backs,
                 "count": settings.refusal_count})
        elif cmd == "publish":
            from driver.venus.service import create_service

            svc = create_service(velib, args[0], processname="host", processversion="0",
                                 connection="test", deviceinstance=0, productid=0,
                                 productname="test")
            svc.register()
            services.append(svc)
            out({"published": args[0]})
        elif cmd == "set":
            out({"result": settings.set(args[0], json.loads(args[1]))})
        elif cmd == "quit":
            loop.stop()

    def reader() -> None:
        for line in sys.stdin:
            call_soon(handle, line.strip())
        GLib.idle_add(loop.stop)

    threading.Thread(target=reader, daemon=True).start()
    loop.run()


if __name__ == "__main__":
    main()
