"""``canbridge-web``: the CanBridge browser page, served by waitress.

On the GX it runs without arguments: it listens on ``Web/ListenAddress`` (empty: every
interface) and ``Web/Port`` (8090) from the settings. When either changes to a usable value
(an address of this machine, a free port the GX does not use itself) it starts itself again
in place (``exec``: same process id) on the new address; a value that is not usable is
refused: the value in force is written back and the page keeps serving where it is. A stored
value that cannot be used at start (or cannot be bound) falls back to the defaults: the
server never stops over a setting. ``--listen``/``--port`` override the settings (tests and
the demo bind 127.0.0.1 only).

Slow or hostile clients (docs/web.md "Connections"): at most PER_ADDRESS_CONNECTIONS open
connections per client address (per /64 for IPv6), more are closed at once; a connection
idle for CHANNEL_TIMEOUT seconds is closed (waitress checks every CLEANUP_INTERVAL s).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
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
#: open connections one client address may have (a browser uses up to 6 per host)
PER_ADDRESS_CONNECTIONS = 10
#: seconds a connection may sit idle (half-sent headers included) before it is closed
CHANNEL_TIMEOUT = 15
CLEANUP_INTERVAL = 2
#: all connections together (waitress's default is 100)
CONNECTION_LIMIT = 200
#: the GX itself: a local proxy (nginx, an SSH tunnel's end) brings every user through these,
#: and local tools (the benchmarks) may open more; a LAN client is never one of them
UNCAPPED = frozenset({"127.0.0.1", "::1"})

log = logging.getLogger("canbridge.web")


def client_key(addr: Any) -> str:
    """The address a connection counts against: IPv4 as is, IPv6 by its /64 (one host on a
    LAN can use any number of addresses of its /64)."""
    host = str(addr[0] if isinstance(addr, (tuple, list)) else addr).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_loopback:
            return str(ip)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionCap:
    """Counts open connections per client (:func:`client_key`); refuses beyond ``limit``."""

    def __init__(self, limit: int = PER_ADDRESS_CONNECTIONS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self.refused = 0

    def acquire(self, key: str) -> bool:
        with self._lock:
            n = self._open.get(key, 0)
            if n >= self.limit:
                self.refused += 1
                return False
            self._open[key] = n + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            n = self._open.get(key, 0) - 1
            if n > 0:
                self._open[key] = n
            else:
                self._open.pop(key, None)


def install_connection_cap(server: Any, cap: ConnectionCap) -> None:
    """Make every listening socket of a waitress server count connections per client."""
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer

    class CappedChannel(HTTPChannel):  # type: ignore[misc]
        cap_key: str | None = None

        def del_channel(self, map: Any = None) -> None:
            super().del_channel(map)
            key, self.cap_key = self.cap_key, None
            if key is not None:
                cap.release(key)

    def make_channel(srv: Any, conn: Any, addr: Any, adj: Any, map: Any = None) -> Any:
        key = client_key(addr)
        if key in UNCAPPED:
            return HTTPChannel(srv, conn, addr, adj, map=map)
        if not cap.acquire(key):
            try:
                conn.close()
            except OSError:
                pass
            if cap.refused % 100 == 1:
                log.warning("too many connections from %s: closing new ones (%d so far)",
                            key, cap.refused)
            return None
        try:
            channel = CappedChannel(srv, conn, addr, adj, map=map)
        except Exception:
            cap.release(key)
            raise
        channel.cap_key = key
        return channel

    servers = [server] if isinstance(server, BaseWSGIServer) else [
        d for d in getattr(server, "map", {}).values() if isinstance(d, BaseWSGIServer)]
    for srv in servers:
        srv.channel_class = make_channel


def usable_listen(address: Any) -> str | None:
    """Why ``Web/ListenAddress`` cannot be used (None: it can): not an address, not here."""
    from webui.writes import check_listen_address

    try:
        check_listen_address(address)
    except ValueError as exc:
        return str(exc)
    if address == "":
        return None
    family = socket.AF_INET6 if ":" in str(address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(address), 0))
    except OSError as exc:
        return f"{address} is not an address of this GX ({exc.strerror})"
    return None


def usable_port(setting: Any, port: Any, address: str, current: int | None) -> str | None:
    """Why ``Web/Port`` cannot be used (None: it can): range, the GX's own ports, taken."""
    from webui.writes import check_value

    try:
        port = check_value(setting, port)
    except ValueError as exc:
        return str(exc)
    if port == current:
        return None
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    except OSError as exc:
        return f"port {port} cannot be used ({exc.strerror})"
    return None


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
    default_port, default_address = int(port_setting.default), str(listen_setting.default)
    unusable: list[Any] = []  # settings whose stored value is replaced by the default
    if args.port is not None:
        port = args.port
    else:
        stored = backend.setting(port_setting.path)
        why = usable_port(port_setting, stored, "", None) if stored is not None else None
        port = default_port if stored is None or why else int(stored)
        if why:
            log.error("Web/Port %r cannot be used (%s): serving on %d", stored, why, port)
            unusable.append(port_setting)
    if args.listen is not None:
        address = args.listen
    else:
        stored = backend.setting(listen_setting.path)
        why = usable_listen(stored) if stored is not None else None
        address = default_address if stored is None or why else str(stored)
        if why:
            log.error("Web/ListenAddress %r cannot be used (%s): listening on every "
                      "interface", stored, why)
            unusable.append(listen_setting)
    level = backend.setting(by_key[LOG_KEY].path)
    if level is not None and not args.debug:
        set_level_from_setting(level)

    config: dict[str, Any] = {"BACKEND": backend}
    if args.password_file:
        config["PASSWORD_FILE"] = args.password_file
    app = create_app(config)
    server_kw = dict(threads=args.threads, ident="canbridge-web",
                     max_request_body_size=64 * 1024,
                     # X-Forwarded-Proto only from a proxy on the GX itself (docs/web.md)
                     trusted_proxy="127.0.0.1", trusted_proxy_headers={"x-forwarded-proto"},
                     clear_untrusted_proxy_headers=True,
                     connection_limit=CONNECTION_LIMIT, channel_timeout=CHANNEL_TIMEOUT,
                     cleanup_interval=CLEANUP_INTERVAL)
    try:
        server = waitress.create_server(app, listen=listen_spec(address, port), **server_kw)
    except OSError as exc:
        fallback = (args.listen if args.listen is not None else default_address,
                    args.port if args.port is not None else default_port)
        if (address, port) == fallback:
            log.critical("cannot listen on %s port %d: %s", address or "every interface",
                         port, exc.strerror)
            backend.stop()
            return 1
        log.error("cannot listen on %s port %d (%s): using %s port %d", address or "every "
                  "interface", port, exc.strerror, fallback[0] or "every interface",
                  fallback[1])
        address, port = fallback
        server = waitress.create_server(app, listen=listen_spec(address, port), **server_kw)
    install_connection_cap(server, ConnectionCap())
    stop = threading.Event()
    in_force = {port_setting.path: port, listen_setting.path: address}

    def write_back(setting: Any, value: Any) -> None:
        # Not on the D-Bus thread (it would wait on itself): the write waits for that thread.
        def go() -> None:
            try:
                backend.set_setting(setting, value)
            except Exception as exc:  # noqa: BLE001 - logged; the server keeps serving
                log.error("cannot write %s back: %s", setting.key, exc)
        threading.Thread(target=go, name="write-back", daemon=True).start()

    def on_change(path: str, value: Any) -> None:
        if path == by_key[LOG_KEY].path and not args.debug:
            set_level_from_setting(value)
        overridden = {port_setting.path: args.port is not None,
                      listen_setting.path: args.listen is not None}
        if path not in overridden or overridden[path] or value == in_force[path]:
            return
        setting = port_setting if path == port_setting.path else listen_setting
        why = (usable_port(setting, value, address, port) if setting is port_setting
               else usable_listen(value))
        if why:
            log.error("%s = %r refused: %s; still serving on %s port %d", setting.key, value,
                      why, address or "every interface", port)
            backend.note_refusal(setting.key, value, in_force[path], why)
            write_back(setting, in_force[path])
            return
        log.info("%s changed to %r: starting again on the new address", setting.key, value)
        stop.set()
        os.kill(os.getpid(), signal.SIGTERM)

    backend.add_listener(on_change)
    for setting in unusable:  # what is in force, for every page to show
        write_back(setting, in_force[setting.path])

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
        log.info("canbridge-web stopped%s", " (address changed: starting again)"
                 if stop.is_set() else "")
        if not stop.is_set():
            logging.shutdown()
    if stop.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        # In place (same process id, so the supervisor sees no exit), on the new address.
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


def _url_host(host_port: tuple[str, int]) -> tuple[str, int]:
    host, port = host_port[0], host_port[1]
    return (f"[{host}]" if ":" in host else host), port


if __name__ == "__main__":
    sys.exit(main())
