"""The JSON API (documented in docs/web.md). Same validation and answers as the pages."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from webui import scan, status_model, view
from webui.auth import attempt_login
from webui.security import csrf_token, error_response, ext, is_authenticated, json_body, log_out
from webui.writes import WriteResult, apply_changes, lookup

bp = Blueprint("api", __name__, url_prefix="/api")
_SINCE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?", re.ASCII)


def _json_body() -> Any:
    """The strictly parsed JSON body (400 on anything malformed: see security.json_body)."""
    return json_body()


def _write_response(res: WriteResult) -> Response:
    written = {k: {"value": v, "answer": a} for k, (v, a) in res.written.items()}
    if res.errors or res.rule_errors:
        return error_response(400, "invalid values; nothing was written", errors=res.errors,
                              rules=res.rule_errors)
    if res.refused:
        return error_response(409, "the settings service refused a value",
                              errors=res.refused, written=written)
    return jsonify({"ok": True, "written": written, "unchanged": res.unchanged})


@bp.get("/session")
def session_info() -> Response:
    policy = ext()["policy"]
    return jsonify({"authenticated": is_authenticated(), "csrf_token": csrf_token(),
                    "password_needed": policy.password_needed()})


@bp.post("/login")
def login() -> Response:
    body = _json_body()
    if not isinstance(body, dict):
        return error_response(400, 'send JSON {"password": "..."}')
    ok, status, message = attempt_login(body.get("password"))
    if not ok:
        return error_response(status, message)
    return jsonify({"ok": True, "csrf_token": csrf_token()})


@bp.post("/logout")
def logout() -> Response:
    log_out()
    return jsonify({"ok": True})


@bp.get("/settings")
def settings() -> Response:
    backend = ext()["backend"]
    if not backend.settings_available():
        return error_response(503, "the settings service (com.victronenergy.settings) is not "
                                   "running; values cannot be read now")
    current = backend.settings()
    values = {s.key: current.get(s.path) for s in ext()["schema"]}
    return jsonify({"version": backend.settings_version(), "values": values,
                    "refusals": status_model.refusals(backend.services(), backend.clock(),
                                                  backend.local_refusals())})


@bp.get("/schema")
def schema() -> Response:
    sch = ext()["schema"]
    current = ext()["backend"].settings()
    return jsonify({
        "groups": [{"id": g.id, "label": g.label, "help": g.help} for g in sch.groups],
        "settings": [view.describe(s, current.get(s.path)) for s in sch],
        "rules": [{"kind": r.kind, "a": sch.by_path[r.a].key, "b": sch.by_path[r.b].key,
                   "message": r.message} for r in sch.rules],
    })


@bp.get("/settings/<path:key>")
def setting(key: str) -> Response:
    s = lookup(ext()["schema"], key)
    if s is None:
        return error_response(404, f"unknown setting '{key}'")
    backend = ext()["backend"]
    if not backend.settings_available():
        return error_response(503, "the settings service is not running")
    return jsonify(view.describe(s, backend.setting(s.path)))


@bp.route("/settings", methods=["POST", "PATCH"])
def write_settings() -> Response:
    body = _json_body()
    if not isinstance(body, dict) or not body:
        return error_response(400, 'send a JSON object {"Group/Name": value, ...}; nothing '
                                   "was written")
    return _write_response(apply_changes(ext()["schema"], ext()["backend"], body))


@bp.put("/settings/<path:key>")
def write_setting(key: str) -> Response:
    body = _json_body()
    if not isinstance(body, dict) or "value" not in body:
        return error_response(400, 'send JSON {"value": ...}; nothing was written')
    if lookup(ext()["schema"], key) is None:
        return error_response(404, f"unknown setting '{key}'; nothing was written")
    return _write_response(apply_changes(ext()["schema"], ext()["backend"],
                                         {key: body["value"]}, force=True))


@bp.post("/settings/<path:key>/reset")
def reset_setting(key: str) -> Response:
    s = lookup(ext()["schema"], key)
    if s is None:
        return error_response(404, f"unknown setting '{key}'; nothing was written")
    return _write_response(apply_changes(ext()["schema"], ext()["backend"],
                                         {s.key: s.dbus_default()}, force=True))


@bp.get("/status")
def status() -> Response:
    return jsonify(status_model.status(ext()["backend"]))


@bp.get("/history")
def history() -> Response:
    """The chart samples; ``?since=<t>``: only those taken after ``t`` (the page polls this way
    and keeps the hour itself, so each poll carries a sample or two, not the whole hour)."""
    raw = request.args.get("since")
    since = None
    if raw is not None:
        if not _SINCE.fullmatch(raw):
            return error_response(400, "since must be a time in seconds (digits 0-9)")
        since = float(raw)
    return jsonify(ext()["backend"].history(since))


@bp.get("/diagnostics")
def diagnostics() -> Response:
    return jsonify(status_model.diagnostics(ext()["backend"]))


@bp.get("/scan")
def scan_state() -> Response:
    return jsonify(scan.state(ext()["backend"]))


@bp.post("/scan")
def scan_start() -> Response:
    status, body = scan.start(ext()["backend"])
    resp = jsonify(body)
    resp.status_code = status
    return resp
