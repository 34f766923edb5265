"""Settings pages: one page per schema group, generated from ``settings_schema.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from driver import canports
from driver.schema import Setting
from webui import status_model, view
from webui.security import ext
from webui.writes import WriteResult, apply_changes

bp = Blueprint("settings", __name__, url_prefix="/settings")


def _group(group_id: str) -> Any:
    for g in ext()["schema"].groups:
        if g.id == group_id:
            return g
    abort(404, f"no settings page '{group_id}'")
    return None


def _render(group_id: str, entered: dict[str, Any] | None = None,
            result: WriteResult | None = None, status: int = 200) -> Response:
    backend = ext()["backend"]
    schema = ext()["schema"]
    group = _group(group_id)
    available = backend.settings_available()
    current = backend.settings()
    reg_errors = backend.registration_errors()
    errors: dict[str, str] = {}
    if result is not None:
        errors.update(result.errors)
        errors.update(result.refused)
    refused = {r["setting"]: r for r in status_model.refusals(
        backend.services(), backend.clock(), backend.local_refusals())}
    rows = []
    for s in schema.in_group(group_id):
        value = current.get(s.path)
        shown = entered[s.key] if entered and s.key in entered else view.fmt(s, value)
        note = ""
        if s.path in reg_errors:
            note = (f"the settings service did not register this setting (error "
                    f"{reg_errors[s.path]}): it may hold a value of another type")
        ports: list[canports.CanPort] = []
        if canports.is_can_interface_setting(s.key):
            # the CAN interfaces of this GX, offered as choices; the same resolution as the
            # driver's, so a port that does not exist (or the BMS-only one) shows its message
            ports = canports.discover()
            role = canports.ROLE_SUPERB if s.key.startswith("Superb/") else canports.ROLE_SMA
            try:
                canports.resolve(str(value if value is not None else s.default), role, ports)
            except canports.CanPortError as exc:
                note = f"{note}; {exc}" if note else str(exc)
        rows.append({"s": s, "value": shown, "orig": view.fmt(s, value),
                     "refusal": refused.get(s.key), "known": value is not None,
                     "default": view.default_text(s), "error": errors.get(s.key),
                     "step": view.step(s), "note": note, "ports": ports,
                     "checked": str(shown) not in ("0", "", "0.0")})
    if not available and status == 200:
        status = 503
    return Response(render_template(
        "settings.html", group=group, rows=rows, available=available,
        rule_errors=result.rule_errors if result else [],
        field_errors=sum(1 for r in rows if r["error"]),
        unknown=[k for k in (result.errors if result else {}) if k not in schema.by_key],
    ), status)


@bp.route("/")
def index() -> Any:
    return redirect(url_for("settings.page", group_id=ext()["schema"].groups[0].id))


@bp.route("/<group_id>", methods=["GET"])
def page(group_id: str) -> Response:
    return _render(group_id)


ORIG_PREFIX = "orig:"


def _form_changes(group_id: str) -> dict[str, Any]:
    """The fields the user changed (last of repeated fields: a switch sends a hidden 0 then 1).

    The page's script sends only changed fields; without script every field comes, each with
    the text it was shown with (``orig:<key>``): a field still showing that text is left
    alone, so saving one setting never rewrites another (``1-3`` stays ``1-3``, 56.834 is not
    rounded to the two decimals shown).
    """
    changes: dict[str, Any] = {}
    for name in request.form:
        if name == "csrf_token" or name.startswith(ORIG_PREFIX):
            continue
        value = request.form.getlist(name)[-1]
        if request.form.get(ORIG_PREFIX + name) == value:
            continue
        changes[name] = value
    return changes


def _summary(res: WriteResult, settings: dict[str, Setting]) -> str:
    if not res.written:
        return "Nothing changed."
    parts = []
    for key, (value, _answer) in res.written.items():
        s = settings[key]
        parts.append(f"{s.label} = {view.fmt(s, value)} {s.unit}".rstrip())
    return "Saved: " + "; ".join(parts) + " (the settings service answered OK)."


@bp.route("/<group_id>", methods=["POST"])
def save(group_id: str) -> Response:
    _group(group_id)
    changes = _form_changes(group_id)
    res = apply_changes(ext()["schema"], ext()["backend"], changes)
    if not res.ok:
        status = 400 if (res.errors or res.rule_errors) else 409
        return _render(group_id, entered={k: str(v) for k, v in changes.items()}, result=res,
                       status=status)
    flash(_summary(res, ext()["schema"].by_key))
    return redirect(url_for("settings.page", group_id=group_id))  # type: ignore[return-value]


@bp.route("/<group_id>/reset", methods=["POST"])
def reset(group_id: str) -> Response:
    _group(group_id)
    key = request.form.get("reset", "")
    setting = ext()["schema"].by_key.get(key)
    if setting is None or setting.group != group_id:
        abort(400, f"unknown setting '{key}' on this page")
    res = apply_changes(ext()["schema"], ext()["backend"], {key: setting.dbus_default()},
                        force=True)
    if not res.ok:
        status = 400 if (res.errors or res.rule_errors) else 409
        return _render(group_id, result=res, status=status)
    flash(f"{setting.label} reset to its default ({view.default_text(setting)})."
          if res.written else f"{setting.label} already has its default.")
    return redirect(url_for("settings.page", group_id=group_id))  # type: ignore[return-value]
