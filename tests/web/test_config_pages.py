"""The configuration and bundle pages through Flask's test client: login and CSRF, refusals,
one bundle at a time, and the settings service being down."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from tests.fixtures.venus import SettingsService
from tests.web.conftest import Bus, wait_until

S = "/Settings/CanBridge/"


def test_pages_need_a_login_and_writes_need_the_csrf_token(client: Any, bus: Bus) -> None:
    r = client.get("/config/export.json")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    r = client.post("/config/import/confirm", data={"document": "{}", "fingerprint": "x"})
    assert r.status_code == 403  # no CSRF token: refused before anything else


def test_export_and_refusals(authed: tuple[Any, str], bus: Bus) -> None:
    client, token = authed
    r = client.get("/config/export.json")
    assert r.status_code == 200
    assert r.headers["Content-Disposition"].startswith('attachment; filename="canbridge-config-')
    doc = json.loads(r.data)
    assert doc["settings"]["Superb/ChargeVoltage"] == bus.get(S + "Superb/ChargeVoltage")

    r = client.post("/config/import", data={"csrf_token": token,
                                            "file": (io.BytesIO(b"not json"), "x.json")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and b"not valid JSON" in r.data
    r = client.post("/config/import", data={"csrf_token": token},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and b"choose a file" in r.data

    # a tampered confirmation is checked again: refused, nothing written
    doc["settings"]["Sma/FloatVoltage"] = 60.0  # above absorption 56.8
    before = bus.get(S + "Sma/FloatVoltage")
    r = client.post("/config/import/confirm", data={"csrf_token": token,
                                                    "document": json.dumps(doc),
                                                    "fingerprint": "whatever"},
                    content_type="multipart/form-data")
    assert r.status_code == 400
    assert b"float voltage must not be above absorption voltage" in r.data
    assert bus.get(S + "Sma/FloatVoltage") == before

    # too large for the page (16 KiB): 413, nothing read
    big = json.dumps({"format": "canbridge-config", "pad": "x" * 20000}).encode()
    r = client.post("/config/import", data={"csrf_token": token,
                                            "file": (io.BytesIO(big), "big.json")},
                    content_type="multipart/form-data")
    assert r.status_code == 413


def test_export_while_the_settings_service_is_down(authed: tuple[Any, str], backend: Any,
                                                   settings_service: SettingsService) -> None:
    client, _ = authed
    settings_service.stop()
    wait_until(lambda: not backend.settings_available(), 5, "the backend to notice")
    r = client.get("/config/export.json")
    assert r.status_code == 503 and b"not running" in r.data


def test_one_bundle_at_a_time(backend: Any, make_app: Any, tmp_path: Path) -> None:
    app = make_app(backend, DIAG_ROOT=str(tmp_path), DIAG_MAX_SECONDS=5)
    client = app.test_client()
    from tests.web.conftest import login

    token = login(client)
    h = {"X-CSRF-Token": token, "Accept": "application/json"}
    assert client.get("/config/bundle/download").status_code == 404
    assert client.post("/config/bundle", data={"seconds": "6"}, headers=h).status_code == 400
    assert client.post("/config/bundle", data={"seconds": "٣"}, headers=h).status_code == 400
    assert client.post("/config/bundle", data={"seconds": "2"}, headers=h).status_code == 200
    r = client.post("/config/bundle", data={"seconds": "2"}, headers=h)
    assert r.status_code == 409 and "being built" in r.get_json()["error"]
    status = wait_until(lambda: (s := client.get("/config/bundle/status").get_json())["done"]
                        and s, 30, "the bundle")
    assert status["available"] and status["error"] == ""
    r = client.get("/config/bundle/download")
    assert r.status_code == 200 and r.mimetype == "application/gzip"
    assert r.data[:2] == b"\x1f\x8b"
