"""Server-side validation before anything is written, and the settings service's answers."""

from __future__ import annotations

from typing import Any

import pytest

from driver.schema import Schema
from tests.web.conftest import PASSWORD, csrf, login, wait_until
from webui.writes import validate, write_order

P = "/Settings/CanBridge/"


def put(client: Any, token: str, key: str, value: Any) -> Any:
    return client.put(f"/api/settings/{key}", json={"value": value},
                      headers={"X-CSRF-Token": token})


def post(client: Any, token: str, body: Any) -> Any:
    return client.post("/api/settings", json=body, headers={"X-CSRF-Token": token})


def test_valid_value_is_written_with_its_type(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    r = put(client, token, "Superb/ChargeVoltage", "14.45")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["written"]["Superb/ChargeVoltage"] == {"value": 14.45, "answer": 0}
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.45)
    assert isinstance(bus.get(P + "Superb/ChargeVoltage"), float)
    r = put(client, token, "Superb/OfflineAfterTimeouts", 5)
    assert r.status_code == 200
    assert bus.get(P + "Superb/OfflineAfterTimeouts") == 5
    # a bulk change writes only what differs from the current values
    r = post(client, token, {"Superb/OfflineAfterTimeouts": "5", "Superb/SdoTimeout": 0.5})
    assert list(r.get_json()["written"]) == ["Superb/SdoTimeout"]
    assert r.get_json()["unchanged"] == ["Superb/OfflineAfterTimeouts"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("Superb/ChargeVoltage", "abc", "is not a number"),
    ("Superb/ChargeVoltage", "", "is not a number"),
    ("Superb/ChargeVoltage", 70, "above the maximum 60"),
    ("Superb/ChargeVoltage", 9.99, "below the minimum 10"),
    ("Superb/ChargeVoltage", "nan", "not a finite number"),
    ("Superb/ChargeVoltage", True, "expected a number"),
    ("Superb/ChargeVoltage", None, "expected a number"),
    ("Superb/ChargeVoltage", [14], "expected a number"),
    ("Superb/OfflineAfterTimeouts", 2.5, "whole number"),
    ("Superb/Bitrate", 300000, "is not one of"),
    ("Superb/NodeIds", "1,2,2", "appears more than once"),
    ("Superb/NodeIds", "1-3,x", "'x' is not a node ID"),
    ("Superb/NodeIds", "0", "outside 1-127"),
    ("Superb/NodeIds", "5-3", "runs backwards"),
    ("Superb/NodeIds", "", "empty"),
    ("Superb/CanInterface", 5, "expected text"),
    ("Superb/CanInterface", "x" * 65, "longer than 64"),
    ("Superb/CanInterface", "can\n0", "control characters"),
])
def test_bad_values_are_refused_and_nothing_written(authed: tuple[Any, str], bus: Any,
                                                    key: str, value: Any, message: str) -> None:
    client, token = authed
    before = bus.get(P + key)
    r = put(client, token, key, value)
    assert r.status_code == 400
    body = r.get_json()
    assert "nothing was written" in body["error"]
    assert message in body["errors"][key]
    assert bus.get(P + key) == before


def test_unknown_setting_names(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    r = post(client, token, {"Superb/ChargeVoltage": 14.3, "Superb/NoSuchThing": 1})
    assert r.status_code == 400
    assert r.get_json()["errors"] == {"Superb/NoSuchThing": "unknown setting 'Superb/NoSuchThing'"}
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.2)  # not even the good one
    assert put(client, token, "Nope", 1).status_code == 404
    r = post(client, token, {"/Settings/System/SecurityProfile": 2})
    assert r.status_code == 400  # only schema settings can be written
    assert client.get("/api/settings/Nope").status_code == 404


def test_node_list_is_normalised(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    r = put(client, token, "Superb/NodeIds", " 5, 1-3 ")
    assert r.status_code == 200
    assert bus.get(P + "Superb/NodeIds") == "1,2,3,5"


def test_cross_field_rules(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    r = put(client, token, "Sma/FloatVoltage", 57.0)  # absorption is 56.8
    assert r.status_code == 400
    assert r.get_json()["rules"] == ["float voltage must not be above absorption voltage"]
    assert bus.get(P + "Sma/FloatVoltage") == pytest.approx(54.0)
    # both at once, in an order that never breaks the rule on the bus
    r = post(client, token, {"Sma/FloatVoltage": 57.5, "Sma/AbsorptionVoltage": 58.0})
    assert r.status_code == 200
    assert list(r.get_json()["written"]) == ["Sma/AbsorptionVoltage", "Sma/FloatVoltage"]
    assert bus.get(P + "Sma/FloatVoltage") == pytest.approx(57.5)
    assert bus.get(P + "Sma/AbsorptionVoltage") == pytest.approx(58.0)
    # Lowering both: float must go first
    r = post(client, token, {"Sma/AbsorptionVoltage": 56.0, "Sma/FloatVoltage": 55.0})
    assert list(r.get_json()["written"]) == ["Sma/FloatVoltage", "Sma/AbsorptionVoltage"]


def test_rules_use_current_values_set_elsewhere(authed: tuple[Any, str], bus: Any,
                                                backend: Any) -> None:
    client, token = authed
    assert bus.set(P + "Sma/AbsorptionVoltage", 55.0) == 0
    wait_until(lambda: backend.setting(P + "Sma/AbsorptionVoltage") == 55.0)
    r = put(client, token, "Sma/FloatVoltage", 55.5)
    assert r.status_code == 400


def test_write_order_and_validate_units(schema: Schema) -> None:
    current = schema.defaults()
    new = {P + "Sma/FloatVoltage": 60.0, P + "Sma/AbsorptionVoltage": 61.0,
           P + "Sma/RebulkVoltage": 59.0}
    order = write_order(schema, current, new)
    state = dict(current)
    for path in order:
        state[path] = new[path]
        assert not schema.rule_violations(state), (order, path)
    res = validate(schema, current, {"Sma/RebulkVoltage": 55.0})
    assert res.rule_errors == ["re-bulk voltage must be below float voltage"]
    assert "Sma/RebulkVoltage" in res.errors


def test_oversized_body_is_refused(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    r = client.post("/api/settings", data=b'{"Superb/ChargeVoltage": 14.3, "x": "' + b"a" *
                    20000 + b'"}', content_type="application/json",
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 413
    assert "too large" in r.get_json()["error"]
    r = client.post("/settings/superb_limits", data={
        "csrf_token": token, "Superb/ChargeVoltage": "14.3", "junk": "a" * 20000})
    assert r.status_code == 413
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.2)


def test_not_json(authed: tuple[Any, str]) -> None:
    client, token = authed
    r = client.post("/api/settings", data="Superb/ChargeVoltage=14.3",
                    content_type="application/json", headers={"X-CSRF-Token": token})
    assert r.status_code == 400
    assert post(client, token, [1, 2]).status_code == 400
    r = client.put("/api/settings/Superb/ChargeVoltage", json={"v": 1},
                   headers={"X-CSRF-Token": token})
    assert r.status_code == 400


def test_settings_service_answer_minus_one_is_an_error(settings_service: Any, bus: Any,
                                                       make_backend: Any, make_app: Any) -> None:
    # An old install left CanInterface as an integer setting: the settings service keeps that
    # type (re-adding cannot change it) and refuses text for it with -1.
    bus.add_setting(P + "Superb/CanInterface", 0, 0, 0)
    backend = make_backend()
    assert backend.registration_errors() == {P + "Superb/CanInterface": -5}
    client = make_app(backend).test_client()
    token = login(client)
    r = put(client, token, "Superb/CanInterface", "can1")
    assert r.status_code == 409
    body = r.get_json()
    assert body["written"]["Superb/CanInterface"]["answer"] == -1
    assert "refused" in body["errors"]["Superb/CanInterface"]
    r = client.post("/settings/superb", data={"csrf_token": token,
                                              "Superb/CanInterface": "can1"})
    assert r.status_code == 409
    assert b"it answered -1" in r.data
    assert b"did not register this setting (error -5)" in r.data


def test_settings_service_down_503_then_recovers(authed: tuple[Any, str], bus: Any,
                                                 backend: Any, settings_service: Any) -> None:
    client, token = authed
    assert put(client, token, "Superb/ChargeVoltage", 14.4).status_code == 200
    settings_service.stop()
    wait_until(lambda: not backend.settings_available(), what="backend to notice")
    r = put(client, token, "Superb/ChargeVoltage", 14.5)
    assert r.status_code == 503
    assert "com.victronenergy.settings" in r.get_json()["error"]
    assert "Nothing was written" in r.get_json()["error"]
    assert client.get("/api/settings").status_code == 503
    r = client.get("/settings/superb_limits")
    assert r.status_code == 503
    assert b"The settings service (com.victronenergy.settings) is not running" in r.data
    assert b'value="14.40"' in r.data  # last known values still shown
    r = client.post("/settings/superb_limits", data={"csrf_token": token,
                                                     "Superb/ChargeVoltage": "14.5"})
    assert r.status_code == 503
    settings_service.start()
    wait_until(backend.settings_available, 10, "backend to recover")
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.4)  # nothing lost
    assert client.get("/api/settings").get_json()["values"]["Superb/ChargeVoltage"] == 14.4
    assert put(client, token, "Superb/ChargeVoltage", 14.5).status_code == 200
    assert bus.get(P + "Superb/ChargeVoltage") == pytest.approx(14.5)


def test_backend_registers_schema_settings_keeping_values(settings_service: Any, bus: Any,
                                                          make_backend: Any,
                                                          schema: Schema) -> None:
    bus.add_setting(P + "Superb/ChargeVoltage", 14.2, 10.0, 60.0)
    assert bus.set(P + "Superb/ChargeVoltage", 14.6) == 0
    backend = make_backend()
    values = backend.settings()
    assert len(values) == len(schema)
    assert values[P + "Superb/ChargeVoltage"] == pytest.approx(14.6)
    for s in schema:  # every setting exists on the bus with the schema's type
        got = bus.get(s.path)
        assert type(got) is {"i": int, "f": float, "s": str}[s.type], s.path


def test_reset_to_default(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    assert put(client, token, "Superb/MaxChargeCurrent", 50).status_code == 200
    r = client.post("/api/settings/Superb/MaxChargeCurrent/reset",
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert bus.get(P + "Superb/MaxChargeCurrent") == 100.0
    assert client.post("/api/settings/Nope/reset",
                       headers={"X-CSRF-Token": token}).status_code == 404


def test_reset_that_would_break_a_rule_is_refused(authed: tuple[Any, str], bus: Any) -> None:
    client, token = authed
    assert post(client, token, {"Sma/AbsorptionVoltage": 53.0, "Sma/FloatVoltage": 52.5,
                                "Sma/RebulkVoltage": 50.0}).status_code == 200
    r = client.post("/api/settings/Sma/FloatVoltage/reset", headers={"X-CSRF-Token": token})
    assert r.status_code == 400  # default 54.0 > absorption 53.0
    assert bus.get(P + "Sma/FloatVoltage") == pytest.approx(52.5)


def test_login_password_length_cap(client: Any) -> None:
    token = csrf(client)
    r = client.post("/api/login", json={"password": PASSWORD + "x" * 300},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 401
    r = client.post("/api/login", json={"password": 5}, headers={"X-CSRF-Token": token})
    assert r.status_code == 400
