"""``canbridge-web``: the CanBridge browser page, served by waitress.

On the GX it runs without arguments: it listens on ``Web/ListenAddress`` (empty: every
interface) and ``Web/Port`` (8090) from the settings, and exits when either changes so its
supervisor starts it again on the new address. ``--listen``/``--port`` override the settings
(tests and the demo bind 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from driver import __version__
from driver.app import limit_malloc_arenas
from driver.logsetup import set_level_from_setting, setup_logging
from driver.schema import SchemaError, load_schema

PORT_KEY = "Web/Port"
LISTEN_KEY = "Web/ListenAddress"
LOG_KEY = "General/LogLevel"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="CanBridge settings and status page")
    ap.add_argument("--listen", help="address to listen on (overrides Web/ListenAddress)")
    ap.add_argument("--port", type=int, help="TCP port (overrides Web/Port)")
    ap.add_argument("--password-file", help="password hash file (overrides Web/PasswordFile)")
    ap.add_argument("--schema", help="settings schema file (default: the installed one)")
    ap.add_argument("--threads", type=int, default=4, help="request threads (default 4)")
    ap.add_argument("--history-interval", type=float, default=5.0,
                    help="seconds between chart samples (default 5; 720 samples are kept)")
    ap.add_argument("--settings-wait", type=float, default=15.0,
                    help="seconds to wait for the settings service at start (default 15)")
    ap.add_argument("--debug", action="store_true", help="log debug messages")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return ap.parse_args(argv)


def listen_spec(address: str, port: int) -> str:
    """waitress's ``listen`` for an address ('' = every interface, IPv4 and IPv6)."""
    if not address:
        return f"0.0.0.0:{port} [::]:{port}"
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()
    args = parse_args(argv)
    log = setup_logging("canbridge-web", logging.DEBUG if args.debug else logging.INFO)
    try:
        schema = load_schema(args.schema)
    except SchemaError as exc:
        log.critical("%s", exc)
        return 2
    import waitress

    from webui import create_app
    from webui.dbus_backend import BackendUnavailable, DbusBackend

    backend = DbusBackend(schema, history_interval=args.history_interval)
    try:
        backend.start()
    except BackendUnavailable as exc:
        log.critical("%s", exc)
        return 1
    deadline = time.monotonic() + args.settings_wait
    while not backend.settings_available() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not backend.settings_available():
        log.warning("the settings service is not there yet; using the default address and "
                    "port, the page shows values once it appears")
    by_key = schema.by_key
    port_setting, listen_setting = by_key[PORT_KEY], by_key[LISTEN_KEY]
    port = args.port if args.port is not None else int(
        backend.setting(port_setting.path) or port_setting.default)
    address = args.listen if args.listen is not None else str(
        backend.setting(listen_setting.path) or listen_setting.default)
    level = backend.setting(by_key[LOG_KEY].path)
    if level is not None and not args.debug:
        set_level_from_setting(level)

    config: dict[str, Any] = {"BACKEND": backend}
    if args.password_file:
        config["PASSWORD_FILE"] = args.password_file
    app = create_app(config)
    server = waitress.create_server(app, listen=listen_spec(address, port), threads=args.threads,
                                    ident="canbridge-web", max_request_body_size=64 * 1024,
                                    clear_untrusted_proxy_headers=True)
    stop = threading.Event()

    def on_change(path: str, value: Any) -> None:
        if path == by_key[LOG_KEY].path and not args.debug:
            set_level_from_setting(value)
        overridden = {port_setting.path: args.port is not None,
                      listen_setting.path: args.listen is not None}
        if path in overridden and not overridden[path]:
            log.info("%s changed to %r: restarting the web server", path, value)
            stop.set()
            os.kill(os.getpid(), signal.SIGTERM)

    backend.add_listener(on_change)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    for host_port in server.effective_listen if hasattr(server, "effective_listen") else []:
        log.info("canbridge-web %s listening on http://%s:%s/", __version__,
                 *_url_host(host_port))
    if not hasattr(server, "effective_listen"):
        log.info("canbridge-web %s listening on http://%s:%s/", __version__,
                 server.effective_host, server.effective_port)
    sys.stdout.flush()
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
        backend.stop()
        log.info("canbridge-web stopped%s", " (address changed)" if stop.is_set() else "")
        logging.shutdown()
    return 0


def _url_host(host_port: tuple[str, int]) -> tuple[str, int]:
    host, port = host_port[0], host_port[1]
    return (f"[{host}]" if ":" in host else host), port


if __name__ == "__main__":
    sys.exit(main())
