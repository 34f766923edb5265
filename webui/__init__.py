"""CanBridge web page: settings, live status, finding batteries, diagnostics, JSON API.

``create_app(config)`` builds the Flask application (flaskr style): one blueprint per area,
everything it talks to injected through ``config``:

``BACKEND`` (required)
    the D-Bus side, normally a started :class:`webui.dbus_backend.DbusBackend`;
``SCHEMA``
    the settings schema (default: the backend's);
``PASSWORD_FILE``
    the password hash file, overriding the ``Web/PasswordFile`` setting (off the GX);
``ON_GX``
    on a GX the password file is always ``/data/conf/vncpassword.txt`` (the setting could
    otherwise be pointed at an empty file by anyone who can write settings); default: detected;
``PASSWORD_CHECKER``
    ``(name, check(password, hash))`` (default: bcrypt, else libcrypt);
``LOGIN_LIMITER``
    a :class:`webui.password.LoginLimiter` (default: 10 free failures, then 30 s doubling).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

GX_PASSWORD_FILE = "/data/conf/vncpassword.txt"
GX_VERSION_FILE = Path("/opt/victronenergy/version")
MAX_BODY = 16 * 1024


def create_app(config: Mapping[str, Any]) -> Flask:
    """The web application, wired to the injected backend (see the module docstring)."""
    from webui import api, auth, config_pages, pages, security, settings_pages
    from webui.password import LoginLimiter, PasswordPolicy

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions end when the process restarts
        SESSION_COOKIE_NAME="canbridge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=False,  # plain HTTP on the LAN, like the GX's port 80
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_BODY,
        PASSWORD_FILE=None,
        ON_GX=GX_VERSION_FILE.is_file(),
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.config.update(config)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep write order in answers
    if "BACKEND" not in app.config:
        raise ValueError("create_app needs a BACKEND")
    backend = app.config["BACKEND"]
    schema = app.config.setdefault("SCHEMA", backend.schema)
    pw_key = next(s.path for s in schema if s.key == "Web/PasswordFile")

    def password_file() -> str:
        if app.config["PASSWORD_FILE"]:
            return str(app.config["PASSWORD_FILE"])
        if app.config["ON_GX"]:
            return GX_PASSWORD_FILE
        value = backend.setting(pw_key)
        return value if isinstance(value, str) and value else GX_PASSWORD_FILE

    app.extensions["canbridge"] = {
        "backend": backend,
        "schema": schema,
        "policy": PasswordPolicy(password_file, backend.security_profile,
                                 app.config.get("PASSWORD_CHECKER")),
        "limiter": app.config.get("LOGIN_LIMITER") or LoginLimiter(),
        "password_file": password_file,
    }
    security.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(settings_pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(config_pages.bp)
    return app
