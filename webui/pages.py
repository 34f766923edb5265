"""The status, battery finder and diagnostics pages (the JSON they show comes from the API)."""

from __future__ import annotations

from flask import Blueprint, render_template

from webui.security import ext

bp = Blueprint("pages", __name__)


@bp.route("/")
def status() -> str:
    return render_template("status.html")


@bp.route("/diagnostics")
def diagnostics() -> str:
    return render_template("diagnostics.html")


@bp.route("/batteries")
def batteries() -> str:
    schema = ext()["schema"]
    node_ids = schema.by_key["Superb/NodeIds"]
    current = ext()["backend"].setting(node_ids.path)
    return render_template("scan.html", node_ids=current)
