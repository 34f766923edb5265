"""Configuration export / import and the diagnostic bundle, on the web page.

* ``GET  /config/``                the page: export button, import form
* ``GET  /config/export.json``     the export (``driver.configio``), as a download
* ``POST /config/import``          an uploaded file: checked whole, shown as a diff against the
                                   settings in force (nothing is written)
* ``POST /config/import/confirm``  the same document and the fingerprint of the settings the
                                   diff was made against: checked again and applied (only if
                                   the settings did not change meanwhile)
* ``GET  /config/bundle``          the diagnostic bundle page (progress shown by config.js)
* ``POST /config/bundle``          start building a bundle (one at a time)
* ``GET  /config/bundle/status``   JSON progress of the bundle being built
* ``GET  /config/bundle/download`` the finished bundle

Optional ``create_app`` config: ``DIAG_ROOT`` (the GX's root, default ``/``),
``DIAG_MAX_SECONDS`` (longest capture offered, default 60), ``DIAG_LOG_LIMIT`` (bytes of each
service's log, default 1 MiB).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from driver import configio, diag
from webui.security import error_response, ext
from webui.writes import WRITE_LOCK

log = logging.getLogger("canbridge.web.config")
bp = Blueprint("config", __name__, url_prefix="/config")
#: finished bundles are deleted after this long if nobody downloads them
BUNDLE_KEEP_S = 15 * 60


def _version() -> int:
    return configio.schema_version()


def _venus() -> str | None:
    return configio.venus_version(current_app.config.get("DIAG_ROOT", "/"))


def _settings_or_503() -> dict[str, Any] | Response:
    backend = ext()["backend"]
    if not backend.settings_available():
        return error_response(503, "the settings service (com.victronenergy.settings) is not "
                                   "running; the settings cannot be read now")
    return dict(backend.settings())


@bp.get("/")
def page() -> str:
    return render_template("config.html", version=_version())


@bp.get("/export.json")
def export() -> Response:
    current = _settings_or_503()
    if isinstance(current, Response):
        return current
    doc = configio.export_document(ext()["schema"], current, version=_version(),
                                   venus=_venus())
    host = diag.safe_name(socket.gethostname())[:40]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    resp = Response(configio.dumps(doc), mimetype="application/json")
    resp.headers["Content-Disposition"] = (f'attachment; filename="canbridge-config-{host}-'
                                           f'{stamp}.json"')
    return resp


def _check(text: str | bytes) -> configio.Checked:
    return configio.check_document(ext()["schema"], configio.parse_text(text),
                                   version=_version())


def _show_diff(text: str, checked: configio.Checked, current: dict[str, Any],
               status: int = 200, warning: str = "") -> Response:
    schema = ext()["schema"]
    changes = configio.diff(schema, current, checked)
    rows = [{"key": c.key, "label": c.setting.label, "group": c.setting.group,
             "current": configio.format_value(c.setting, c.current),
             "new": configio.format_value(c.setting, c.new)} for c in changes]
    src = checked.source
    return Response(render_template(
        "config_import.html", rows=rows, notes=checked.notes, document=text,
        fingerprint=configio.fingerprint(schema, current), warning=warning,
        source={"canbridge": src.get("canbridge_version"), "venus": src.get("venus_version"),
                "exported": src.get("exported"), "schema": src.get("schema_version")},
        errors=[]), status)


def _refused(errors: list[str], status: int = 400) -> Response:
    return Response(render_template("config_import.html", rows=[], notes=[], document="",
                                    fingerprint="", warning="", source={}, errors=errors),
                    status)


@bp.post("/import")
def import_check() -> Response:
    upload = request.files.get("file")
    raw = upload.read() if upload is not None else request.form.get("document", "").encode()
    if not raw:
        return _refused(["choose a file exported by CanBridge first"])
    current = _settings_or_503()
    if isinstance(current, Response):
        return current
    try:
        checked = _check(raw)
    except configio.ImportRefused as exc:
        return _refused(exc.errors)
    return _show_diff(raw.decode("utf-8"), checked, current)


@bp.post("/import/confirm")
def import_confirm() -> Response:
    text = request.form.get("document", "")
    expect = request.form.get("fingerprint", "")
    try:
        checked = _check(text)
    except configio.ImportRefused as exc:
        return _refused(exc.errors)
    backend = ext()["backend"]
    schema = ext()["schema"]
    # the same lock as every other write of the page (webui/writes.py): the check against
    # the settings in force and the writes happen with no other write of the page between
    with WRITE_LOCK:
        current = _settings_or_503()
        if isinstance(current, Response):
            return current
        if configio.fingerprint(schema, current) != expect:
            return _show_diff(text, checked, current, 409,
                              "The settings changed since these differences were shown (someone "
                              "or something else wrote a setting). Nothing was written: review the "
                              "differences below and confirm again.")
        try:
            res = configio.apply_document(schema, backend, checked, expect=expect)
        except configio.ImportRefused as exc:
            return _refused(exc.errors, 409)
    if res.refused:
        undone = ", ".join(res.rolled_back) or "nothing"
        return _refused([f"{res.refused}. The values written before it were put back "
                         f"({undone})."], 409)
    if res.mismatches:
        return _refused(["After the import these settings differ from the file: "
                         + "; ".join(res.mismatches)], 409)
    flash(f"Imported: {len(res.written)} setting(s) written, {res.unchanged} unchanged "
          "(the settings service answered OK to each)." if res.written else
          "Nothing to import: the file matches the settings in force.")
    log.info("configuration imported: %s", ", ".join(k for k, _v, _a in res.written) or "none")
    return redirect(url_for("config.page"))  # type: ignore[return-value]


# -- diagnostic bundle --------------------------------------------------------------------------

@dataclass
class BundleJob:
    """The one bundle being built (or last built) by this process."""

    seconds: float
    started: float = field(default_factory=time.time)
    fraction: float = 0.0
    text: str = "starting"
    done: bool = False
    error: str = ""
    path: Path | None = None
    name: str = ""
    size: int = 0
    problems: list[str] = field(default_factory=list)
    finished: float = 0.0


class BundleRunner:
    """Runs one bundle at a time in a thread of its own; keeps the result in a temp file."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.job: BundleJob | None = None

    def running(self) -> bool:
        with self.lock:
            return self.job is not None and not self.job.done

    def status(self) -> dict[str, Any]:
        with self.lock:
            job = self.job
            if job is None:
                return {"running": False, "done": False}
            self._expire(job)
            return {"running": not job.done, "done": job.done, "fraction": round(job.fraction, 3),
                    "text": job.text, "error": job.error, "name": job.name, "size": job.size,
                    "seconds": job.seconds, "problems": job.problems,
                    "available": job.path is not None}

    def _expire(self, job: BundleJob) -> None:
        if job.done and job.path is not None and time.time() - job.finished > BUNDLE_KEEP_S:
            job.path.unlink(missing_ok=True)
            job.path = None

    def start(self, app: Flask, seconds: float) -> bool:
        with self.lock:
            if self.job is not None and not self.job.done:
                return False
            if self.job is not None and self.job.path is not None:
                self.job.path.unlink(missing_ok=True)
            self.job = job = BundleJob(seconds)
        threading.Thread(target=self._run, args=(app, job), name="diag-bundle",
                         daemon=True).start()
        return True

    def _run(self, app: Flask, job: BundleJob) -> None:
        from driver.venus.busclient import canbridge_snapshot, connect

        canb = app.extensions["canbridge"]
        backend = canb["backend"]
        secret_files = []
        try:
            secret_files.append(Path(canb["password_file"]()))
        except Exception as exc:  # noqa: BLE001 - no password file setting: nothing to hide
            log.debug("no password file: %s", exc)
        key = app.config.get("SECRET_KEY") or b""
        key_bytes = key if isinstance(key, bytes) else str(key).encode()
        cfg = diag.BundleConfig(
            root=Path(app.config.get("DIAG_ROOT", "/")), capture_seconds=job.seconds,
            log_limit=int(app.config.get("DIAG_LOG_LIMIT", diag.MIB)),
            secret_files=secret_files, secrets=[key_bytes, key_bytes.hex().encode()])

        def snapshot() -> dict[str, Any]:
            bus = connect(getattr(backend, "address", None))
            try:
                return canbridge_snapshot(bus)
            finally:
                bus.close()

        def progress(fraction: float, text: str) -> None:
            with self.lock:
                job.fraction, job.text = fraction, text

        fd, tmp = tempfile.mkstemp(prefix="canbridge-diag-", suffix=".tar.gz")
        os.close(fd)
        path = Path(tmp)
        try:
            report = diag.write_bundle(path, cfg, settings=backend.settings, snapshot=snapshot,
                                       progress=progress, schema_version=_schema_version())
        except Exception as exc:  # shown on the page
            log.exception("diagnostic bundle failed")
            path.unlink(missing_ok=True)
            with self.lock:
                job.error, job.done, job.finished = str(exc), True, time.time()
            return
        with self.lock:
            job.path, job.name, job.size = path, report.name + ".tar.gz", report.size
            job.problems = list(report.problems)
            job.fraction, job.text = 1.0, "done"
            job.done, job.finished = True, time.time()
        log.info("diagnostic bundle %s: %d bytes", report.name, report.size)


def _schema_version() -> int:
    return configio.schema_version()


def _runner() -> BundleRunner:
    runner: BundleRunner = current_app.extensions.setdefault("canbridge_bundle", BundleRunner())
    return runner


def _max_seconds() -> float:
    return float(current_app.config.get("DIAG_MAX_SECONDS", 60))


@bp.get("/bundle")
def bundle_page() -> str:
    return render_template("config_bundle.html", max_seconds=int(_max_seconds()),
                           status=_runner().status())


@bp.post("/bundle")
def bundle_start() -> Response:
    raw = request.form.get("seconds", "10")
    try:
        seconds = float(raw) if raw.isascii() else -1.0
    except ValueError:
        seconds = -1.0
    wants_json = request.accept_mimetypes.best == "application/json"

    def fail(status: int, message: str) -> Response:
        if wants_json:
            resp = jsonify({"error": message})
            resp.status_code = status
            return resp
        return error_response(status, message)

    if not 0 <= seconds <= _max_seconds():
        return fail(400, f"capture seconds must be a number from 0 to {_max_seconds():.0f}")
    if not _runner().start(current_app._get_current_object(), seconds):  # type: ignore[attr-defined]
        return fail(409, "a diagnostic bundle is being built already")
    if wants_json:
        return jsonify({"ok": True})
    return redirect(url_for("config.bundle_page"))  # type: ignore[return-value]


@bp.get("/bundle/status")
def bundle_status() -> Response:
    return jsonify(_runner().status())


@bp.get("/bundle/download")
def bundle_download() -> Response:
    runner = _runner()
    with runner.lock:
        job = runner.job
        path = job.path if job is not None and job.done else None
        name = job.name if job is not None else ""
    if path is None or not path.is_file():
        return error_response(404, "no diagnostic bundle is ready; create one first")
    return send_file(path, mimetype="application/gzip", as_attachment=True,
                     download_name=name, max_age=0)
