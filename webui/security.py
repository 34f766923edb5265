"""Sessions, login enforcement, CSRF protection, security headers and error pages.

* Every page and API call except the login itself and static files needs an authenticated
  session (unless the GX has no password: empty password file or the unsecured profile).
  A session is bound to the password: it ends when the password file changes.
* Every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's CSRF token
  (form field ``csrf_token`` or header ``X-CSRF-Token``); a foreign ``Origin`` is refused too.
* Responses carry a strict Content-Security-Policy (no inline script or style, nothing from
  other origins), ``nosniff``, ``no-referrer``, and ``no-store`` for the API.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from webui.dbus_backend import BackendUnavailable

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC_ENDPOINTS = {"static", "auth.login", "api.session_info", "api.login"}
SESSION_MAX_AGE = 24 * 3600

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


def is_authenticated() -> bool:
    """True when the session is logged in with the current password, or none is needed."""
    policy = ext()["policy"]
    if not policy.password_needed():
        return True
    if session.get("auth") != policy.fingerprint():
        return False
    started = session.get("since", 0)
    return isinstance(started, (int, float)) and time.time() - started < SESSION_MAX_AGE


def log_in() -> None:
    """Start a fresh session (new CSRF token: no session fixation)."""
    session.clear()
    session["auth"] = ext()["policy"].fingerprint()
    session["since"] = int(time.time())
    csrf_token()


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
