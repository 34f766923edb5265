"""Checking a password against the GX's own password file.

The GX keeps the Remote Console password as a bcrypt hash (``$2a$08$...``) in
``/data/conf/vncpassword.txt``. An empty file means "no password"; a missing file means no
password was ever configured, which only the *unsecured* security profile accepts.

Verification uses the ``bcrypt`` package where it is installed and otherwise libcrypt's
``crypt()`` through ctypes (what a GX has); both compare in constant time. Nothing but the
file's own hash is used, and the file is read again for every login.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

log = logging.getLogger("canbridge.web.auth")

#: /Settings/System/SecurityProfile values
PROFILE_SECURE, PROFILE_WEAK, PROFILE_UNSECURED, PROFILE_NOT_CHOSEN = 0, 1, 2, 3

MAX_HASH_FILE = 4096


class PasswordState(Enum):
    """What the password file says."""

    HASH = "hash"  # a hash to check against
    EMPTY = "empty"  # empty file: no password
    MISSING = "missing"  # no file (or unreadable): not configured


def read_password_file(path: Path | str) -> tuple[PasswordState, str]:
    """(state, hash) of the password file; the hash is the first line, stripped."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_HASH_FILE)
    except FileNotFoundError:
        return PasswordState.MISSING, ""
    except OSError as exc:
        log.error("cannot read the password file %s: %s", path, exc.strerror)
        return PasswordState.MISSING, ""
    text = data.decode("ascii", "replace").strip()
    if not text:
        return PasswordState.EMPTY, ""
    return PasswordState.HASH, text.splitlines()[0].strip()


def _bcrypt_checker() -> Callable[[bytes, bytes], bool] | None:
    try:
        import bcrypt
    except ImportError:
        return None

    def check(password: bytes, hashed: bytes) -> bool:
        try:
            return bool(bcrypt.checkpw(password, hashed))
        except ValueError:  # not a bcrypt hash at all
            return False

    return check


_crypt_lock = threading.Lock()


def _libcrypt_checker() -> Callable[[bytes, bytes], bool] | None:
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    fn = lib.crypt
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    fn.restype = ctypes.c_char_p

    def check(password: bytes, hashed: bytes) -> bool:
        with _crypt_lock:  # crypt() returns a static buffer
            out = fn(password, hashed)
        if not out or out.startswith(b"*"):  # "*0"/"*1": libxcrypt's failure tokens
            return False
        return hmac.compare_digest(out, hashed)

    return check


def make_checker(prefer: str = "auto") -> tuple[str, Callable[[bytes, bytes], bool]]:
    """(name, check(password, hash)) using ``bcrypt`` if importable, else libcrypt ``crypt``.

    ``prefer`` = ``"bcrypt"`` or ``"crypt"`` forces one (tests use it to check both).
    """
    order = {"auto": ("bcrypt", "crypt"), "bcrypt": ("bcrypt",), "crypt": ("crypt",)}[prefer]
    for name in order:
        check = _bcrypt_checker() if name == "bcrypt" else _libcrypt_checker()
        if check is not None:
            return name, check
    raise RuntimeError("neither the bcrypt package nor libcrypt is available")


@dataclass
class Verdict:
    """The outcome of a password check."""

    ok: bool
    reason: str


class PasswordPolicy:
    """Who may in, from the password file and the security profile.

    * unsecured profile (2): no password, even without a file;
    * secure profile (0): a password is required; an empty or missing file lets nobody in
      (Venus never combines the secure profile with an empty password);
    * weak (1), not chosen (3) or unknown: the file decides; empty = no password,
      missing = nobody.
    """

    def __init__(self, path_fn: Callable[[], str], profile_fn: Callable[[], int | None],
                 checker: tuple[str, Callable[[bytes, bytes], bool]] | None = None) -> None:
        self._path_fn = path_fn
        self._profile_fn = profile_fn
        self.method, self._check = checker if checker is not None else make_checker()

        self._cache: tuple[Any, tuple[PasswordState, str]] | None = None

    def _read_cached(self) -> tuple[PasswordState, str]:
        """The file's content, re-read whenever its path, inode, size or mtime change.

        Used for the per-request session checks; :meth:`verify` always reads the file afresh.
        """
        path = self._path_fn()
        try:
            st = os.stat(path)
            key: Any = (path, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = (path, None)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, read_password_file(path))
        return self._cache[1]

    def state(self) -> PasswordState:
        return self._read_cached()[0]

    def password_needed(self) -> bool:
        """False when anyone may use the page without logging in."""
        profile = self._profile_fn()
        if profile == PROFILE_UNSECURED:
            return False
        if profile == PROFILE_SECURE:
            return True
        return self.state() is not PasswordState.EMPTY

    def fingerprint(self) -> str:
        """Changes whenever the password (file) changes; binds sessions to the password."""
        state, hashed = self._read_cached()
        return hmac.new(b"canbridge-session", f"{state.value}:{hashed}".encode(),
                        "sha256").hexdigest()[:24]

    def verify(self, password: str) -> Verdict:
        """Check ``password`` (re-reading the file now)."""
        profile = self._profile_fn()
        if profile == PROFILE_UNSECURED:
            return Verdict(True, "unsecured profile: no password")
        state, hashed = read_password_file(self._path_fn())
        if state is PasswordState.MISSING:
            return Verdict(False, "no password is configured on this GX (password file "
                                  "missing); set one in the Remote Console")
        if state is PasswordState.EMPTY:
            if profile == PROFILE_SECURE:
                return Verdict(False, "the secure profile needs a password; none is set")
            return Verdict(True, "no password set")
        if len(password) > 256:
            return Verdict(False, "wrong password")
        ok = self._check(password.encode("utf-8"), hashed.encode("ascii", "replace"))
        return Verdict(ok, "ok" if ok else "wrong password")


class LoginLimiter:
    """Lock out a client after repeated failures, doubling the lockout each time; and a
    budget of failed password checks for everybody together.

    Per address: after ``free`` consecutive failures from one address, that address is
    locked for ``base`` seconds; every further failure doubles the lockout (up to ``cap``).
    A success clears it.

    Together (independent of the source address, which an attacker on the LAN can rotate
    freely, IPv6 above all): at most ``global_budget`` failed checks in any ``window``
    seconds. The failure that uses the budget up locks *every* login for ``global_base``
    seconds, doubling with each further time the budget is used up (up to ``cap``), as
    Victron's own login does; a successful login resets the doubling. Locked-out attempts are
    answered 429 without checking the password, so they cost no bcrypt time either.

    The price: someone guessing can keep the rightful user from logging in to this page for
    a while (the Remote Console and SSH are not affected). A page that can be guessed into is
    worse.
    """

    def __init__(self, free: int = 10, base: float = 30.0, cap: float = 3600.0,  # noqa: PLR0917
                 clock: Callable[[], float] | None = None, max_clients: int = 1024,
                 global_budget: int = 30, window: float = 60.0,
                 global_base: float = 60.0) -> None:
        import time

        self.free, self.base, self.cap = free, base, cap
        self.clock = clock or time.monotonic
        self.max_clients = max_clients
        self.global_budget, self.window, self.global_base = global_budget, window, global_base
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # addr -> (failures, locked until)
        self._recent: deque[float] = deque()  # times of recent failures (any address)
        self._global_until = 0.0
        self._global_strikes = 0

    def locked_for(self, addr: str) -> float:
        """Seconds ``addr`` must still wait (0 if it may try)."""
        now = self.clock()
        with self._lock:
            _, until = self._state.get(addr, (0, 0.0))
            until = max(until, self._global_until)
        return max(0.0, until - now)

    def failure(self, addr: str) -> None:
        now = self.clock()
        with self._lock:
            failures, _ = self._state.get(addr, (0, 0.0))
            failures += 1
            until = 0.0
            if failures >= self.free:
                until = now + min(self.cap, self.base * 2 ** (failures - self.free))
            if len(self._state) >= self.max_clients and addr not in self._state:
                # Forget the client whose lockout ends first (bounded memory).
                oldest = min(self._state, key=lambda a: self._state[a][1])
                del self._state[oldest]
            self._state[addr] = (failures, until)
            self._recent.append(now)
            while self._recent and now - self._recent[0] >= self.window:
                self._recent.popleft()
            global_wait = 0.0
            if len(self._recent) >= self.global_budget:
                global_wait = min(self.cap, self.global_base * 2 ** self._global_strikes)
                self._global_strikes += 1
                self._global_until = now + global_wait
                self._recent.clear()
        if until:
            log.warning("login from %s locked for %.0f s after %d failures", addr,
                        until - now, failures)
        if global_wait:
            log.warning("%d failed logins within %.0f s (from any address): every login "
                        "locked for %.0f s", self.global_budget, self.window, global_wait)

    def success(self, addr: str) -> None:
        with self._lock:
            self._state.pop(addr, None)
            self._global_strikes = 0
