"""Sessions, login enforcement, CSRF protection, host names, security headers, error pages.

* Every request whose ``Host`` is not one of the GX's own names or addresses is answered 421
  before anything else (DNS rebinding; :mod:`webui.hosts`).

* Every page and API call except the login itself and static files needs an authenticated
  session (unless the GX has no password: empty password file or the unsecured profile).
  A session is bound to the password: it ends when the password file changes.
* Every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's CSRF token
  (form field ``csrf_token`` or header ``X-CSRF-Token``); a foreign ``Origin`` is refused too.
* Sessions are listed on the server too: logging out ends the session there, so a copied
  cookie is worthless afterwards. The cookie is ``Secure`` when the request came over HTTPS
  (``X-Forwarded-Proto`` is believed only from a proxy on the GX itself: loopback).
* Request bodies are parsed strictly (:func:`json_body`): bad encodings, deep nesting, huge
  numbers, NaN and lone surrogates are 400, never 500.
* Responses carry a strict Content-Security-Policy (no inline script or style, nothing from
  other origins), ``nosniff``, ``no-referrer``, and ``no-store`` for the API.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import BadRequest, HTTPException

from webui.dbus_backend import BackendUnavailable

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC_ENDPOINTS = {"static", "auth.login", "api.session_info", "api.login"}
SESSION_MAX_AGE = 24 * 3600
MAX_SESSIONS = 256
#: JSON bodies: nesting deeper than this, or integers with more digits, are refused (400)
MAX_JSON_DEPTH = 16
MAX_INT_DIGITS = 24

log = logging.getLogger("canbridge.web")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


def ext() -> dict[str, Any]:
    from flask import current_app

    return current_app.extensions["canbridge"]  # type: ignore[no-any-return]


def wants_json() -> bool:
    return request.path.startswith("/api/")


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


class SessionStore:
    """The logged-in sessions, on the server: a session id in the (signed) cookie must be
    listed here too, so logging out ends it for good. At most ``limit`` sessions (the oldest
    is dropped), each at most SESSION_MAX_AGE seconds; all end when the process restarts."""

    def __init__(self, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, float] = OrderedDict()

    def create(self) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            self._ids[sid] = self.clock()
            while len(self._ids) > self.limit:
                self._ids.popitem(last=False)
        return sid

    def valid(self, sid: Any) -> bool:
        if not isinstance(sid, str):
            return False
        with self._lock:
            started = self._ids.get(sid)
            if started is None:
                return False
            if self.clock() - started >= SESSION_MAX_AGE:
                del self._ids[sid]
                return False
            return True

    def revoke(self, sid: Any) -> None:
        if isinstance(sid, str):
            with self._lock:
                self._ids.pop(sid, None)


def is_authenticated() -> bool:
    """True when the session is logged in with the current password, or none is needed."""
    policy = ext()["policy"]
    if not policy.password_needed():
        return True
    if session.get("auth") != policy.fingerprint():
        return False
    if not ext()["sessions"].valid(session.get("sid")):
        return False
    started = session.get("since", 0)
    return isinstance(started, (int, float)) and time.time() - started < SESSION_MAX_AGE


def log_in() -> None:
    """Start a fresh session (new id and CSRF token: no session fixation)."""
    ext()["sessions"].revoke(session.get("sid"))
    session.clear()
    session["auth"] = ext()["policy"].fingerprint()
    session["since"] = int(time.time())
    session["sid"] = ext()["sessions"].create()
    csrf_token()


def log_out() -> None:
    """End the session here and on the server (the cookie is worthless afterwards)."""
    ext()["sessions"].revoke(session.get("sid"))
    session.clear()


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` when the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class LoopbackProxyFix:
    """Believe ``X-Forwarded-Proto`` only from a proxy on this machine (loopback).

    A proxy on the GX (its nginx, an SSH tunnel's end) connects from 127.0.0.1 or ::1; any
    other client could claim HTTPS at will, so the header is dropped for them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        proto = str(environ.pop("HTTP_X_FORWARDED_PROTO", "")).strip().lower()
        if proto in ("http", "https") and is_loopback(environ.get("REMOTE_ADDR")):
            environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)


# -- strict request bodies -----------------------------------------------------------------------
def _json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"number with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def check_text(obj: Any, where: str = "body") -> None:
    """Raise ValueError for any string (key or value) that is not valid Unicode text."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text with a lone surrogate (not valid Unicode)") from None
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_text(k, where)
            check_text(v, f"{where}.{k}" if isinstance(k, str) else where)
    elif isinstance(obj, list):
        for v in obj:
            check_text(v, where)


def json_body() -> Any:
    """The request's JSON body, parsed strictly; raises 400 (``BadRequest``) when malformed.

    UTF-8 only (RFC 8259), at most MAX_JSON_DEPTH levels, integers of at most MAX_INT_DIGITS
    digits, no NaN/Infinity, no lone surrogates (escaped ``\\ud800`` included).
    """
    if request.mimetype != "application/json":
        raise BadRequest("send the body as application/json")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BadRequest("JSON must be UTF-8")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid UTF-8") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
        check_text(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    return body


def allowed_hosts_extra() -> Iterable[str]:
    """Host names the user added (the ``Web/AllowedHosts`` setting)."""
    setting = ext()["schema"].by_key.get("Web/AllowedHosts")
    value = ext()["backend"].setting(setting.path) if setting is not None else None
    return [x.strip() for x in value.split(",")] if isinstance(value, str) else []


def error_response(status: int, message: str, **extra: Any) -> Response:
    if wants_json():
        resp = jsonify({"error": message, **extra})
        resp.status_code = status
        return resp
    resp = Response(render_template("error.html", status=status, message=message), status)
    return resp


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in ("http", "https")


def _before() -> Any:
    g.t0 = time.perf_counter()
    if not ext()["hosts"].allowed(request.headers.get("Host")):
        # Before anything else: a foreign name is a DNS-rebinding page (or a mistake).
        return Response(f"421 Misdirected Request: this GX does not answer to the name "
                        f"{request.headers.get('Host', '')[:80]!r}. Use its address, or add "
                        "the name to the Web/AllowedHosts setting.\n", 421,
                        mimetype="text/plain")
    endpoint = request.endpoint or ""
    if request.method in STATE_CHANGING:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and not _same_origin(origin):
            return error_response(403, "request from another site refused")
        sent = request.headers.get("X-CSRF-Token") or ""
        if not sent and request.mimetype in ("application/x-www-form-urlencoded",
                                             "multipart/form-data"):
            sent = request.form.get("csrf_token", "")
        expected = session.get("csrf")
        if not sent or not isinstance(expected, str) or not hmac.compare_digest(
                sent.encode(), expected.encode()):
            return error_response(
                403, "missing or wrong CSRF token: reload the page and try again; "
                     "nothing was changed")
    if endpoint in PUBLIC_ENDPOINTS or endpoint == "":
        return None
    if not is_authenticated():
        if wants_json():
            return error_response(401, "log in first (POST /api/login)")
        if request.method in STATE_CHANGING:
            return error_response(401, "your session has ended: log in again; nothing was "
                                       "changed")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


def _after(resp: Response) -> Response:
    h = resp.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/static/"):
        h["Cache-Control"] = "public, max-age=3600"
    else:
        h["Cache-Control"] = "no-store"
    t0 = g.get("t0")
    if t0 is not None:
        h["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return resp


def init_app(app: Flask) -> None:
    from webui.hosts import HostAllowList

    app.session_interface = SessionInterface()
    app.wsgi_app = LoopbackProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["canbridge"].setdefault("sessions", SessionStore())
    app.extensions["canbridge"].setdefault(
        "hosts", app.config.get("HOST_ALLOW_LIST") or HostAllowList(allowed_hosts_extra))
    app.before_request(_before)
    app.after_request(_after)

    @app.context_processor
    def inject() -> dict[str, Any]:
        schema = ext()["schema"]
        return {"csrf_token": csrf_token, "groups": schema.groups,
                "logged_in": is_authenticated,
                "password_needed": ext()["policy"].password_needed}

    @app.errorhandler(BackendUnavailable)
    def unavailable(exc: BackendUnavailable) -> Response:
        return error_response(503, f"{exc}. Nothing was written; try again when it is back "
                                   "(the page recovers by itself).")

    @app.errorhandler(413)
    def too_large(exc: HTTPException) -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, f"request body too large (at most {limit} bytes); "
                                   "nothing was written")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("request %s %s failed", request.method, request.path)
        return error_response(500, "internal error (logged)")

