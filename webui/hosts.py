"""Which ``Host`` headers the page answers: a defence against DNS rebinding.

A page on another site can make its own name resolve to the GX (DNS rebinding); the browser
then treats the GX as that site and lets the page's script read and write it, Origin and
CSRF checks included (same origin, as far as the browser knows). The one thing such a request
cannot fake is the ``Host`` header: it carries the attacker's name. So every request whose
``Host`` is not one of the GX's own names or addresses is answered 421 before any handler
runs (docs/web.md "Host names").

Allowed: ``localhost`` and loopback addresses, the machine's host name (with and without
``.local``), ``venus.local``, every address of every interface (IPv4 and IPv6, read again at
most every REFRESH seconds, so a DHCP change is picked up), the address the server listens
on, and what the user adds in the ``Web/AllowedHosts`` setting (comma separated names or
addresses, e.g. a DNS name given to the GX on the LAN).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

REFRESH = 30.0
FIXED_NAMES = ("localhost", "venus.local", "localhost.localdomain")
SIOCGIFADDR = 0x8915


def interface_addresses() -> set[str]:
    """Every IPv4 and IPv6 address of this machine's interfaces (text, IPv6 compressed)."""
    out: set[str] = set()
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)
                out.add(socket.inet_ntoa(res[20:24]))
            except OSError:
                continue  # no IPv4 address on this interface
    try:
        with open("/proc/net/if_inet6") as fh:
            for line in fh:
                raw = line.split()[0]
                if len(raw) == 32:
                    out.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except OSError:
        pass
    return out


def split_host(host: str) -> str:
    """The name or address of a ``Host`` header, without port, brackets, case or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def normalise(name: str) -> str:
    """A name or address in the form :func:`split_host` gives (IPv6 compressed)."""
    name = split_host(name)
    try:
        return str(ipaddress.ip_address(name.split("%", 1)[0]))
    except ValueError:
        return name


class HostAllowList:
    """Decides whether a ``Host`` header names this GX (see the module docstring)."""

    def __init__(self, extra: Callable[[], Iterable[str]] = tuple,
                 addresses: Callable[[], set[str]] = interface_addresses,
                 hostname: Callable[[], str] = socket.gethostname,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._extra = extra
        self._addresses = addresses
        self._hostname = hostname
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: set[str] = set()
        self._at = -1e18

    def _own(self) -> set[str]:
        now = self._clock()
        with self._lock:
            if now - self._at > REFRESH:
                names = set(FIXED_NAMES)
                try:
                    host = self._hostname().lower().rstrip(".")
                except OSError:
                    host = ""
                if host:
                    short = host.split(".", 1)[0]
                    names |= {host, short, f"{short}.local"}
                names |= {normalise(a) for a in self._addresses()}
                self._cached, self._at = names, now
            return set(self._cached)

    def allowed(self, host_header: str | None) -> bool:
        """True when ``host_header`` names this machine (or a name the user allowed)."""
        if not host_header:
            return False  # HTTP/1.1 needs one; browsers always send it
        host = normalise(host_header)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_loopback:
            return True
        if host in self._own():
            return True
        return host in {normalise(x) for x in self._extra() if x.strip()}

    def refresh(self) -> None:
        """Read the interface addresses again at the next check."""
        with self._lock:
            self._at = -1e18
