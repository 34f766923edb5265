"""Logging in with the GX's own password (the Remote Console password)."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for

from webui.security import ext, is_authenticated, log_in, log_out

log = logging.getLogger("canbridge.web.auth")

bp = Blueprint("auth", __name__)


def client_address() -> str:
    return request.remote_addr or "?"


def attempt_login(password: Any) -> tuple[bool, int, str]:
    """(ok, HTTP status, message) of a login attempt from this client; starts the session."""
    limiter = ext()["limiter"]
    addr = client_address()
    wait = limiter.locked_for(addr)
    if wait > 0:
        return False, 429, (f"too many failed logins: try again in {wait:.0f} s")
    if not isinstance(password, str):
        return False, 400, "password must be text"
    verdict = ext()["policy"].verify(password)
    if not verdict.ok:
        limiter.failure(addr)
        log.warning("failed login from %s: %s", addr, verdict.reason)
        return False, 401, verdict.reason
    limiter.success(addr)
    log_in()
    log.info("login from %s", addr)
    return True, 200, "logged in"


#: a same-site path: "/" then printable ASCII without backslash; nothing a browser would
#: strip (tab, newline: "/\t/evil.example" becomes "//evil.example") or decode into a host
_SAFE_PATH = re.compile(r"/(?![/\\])[!#-\[\]-~]*|/")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a same-site relative path, anything else ``/``.

    Refused: other schemes or hosts (``https:``, ``//x``, ``/\\x``), control characters and
    whitespace anywhere (browsers drop tabs and newlines from URLs, so ``/%09/evil.example``
    would become ``//evil.example``), non-ASCII, backslashes.
    """
    if not isinstance(target, str):
        return "/"
    # checked as given and once decoded ("/%09/x", "/%5cx", "/%2f/x" are refused too)
    for text in (target, unquote(target)):
        if not _SAFE_PATH.fullmatch(text):
            return "/"
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return "/"
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        if is_authenticated():
            return redirect(nxt)
        return render_template("login.html", next=nxt, error=None)
    ok, status, message = attempt_login(request.form.get("password", ""))
    if ok:
        return redirect(nxt)
    return Response(render_template("login.html", next=nxt, error=message), status)


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    log_out()
    return redirect(url_for("auth.login"))
