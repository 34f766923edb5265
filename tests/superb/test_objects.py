"""Decoding SDO responses with the object table: sizes, scaling, ranges, firmware."""

from __future__ import annotations

import pytest

from driver.superb import objects as objs


def _dec(key: str, data: bytes) -> object:
    return objs.decode(objs.BY_KEY[key], data)


def test_voltage_u32_and_seed_i32_and_scaling() -> None:
    assert _dec("voltage", (13 * 1024 + 512).to_bytes(4, "little")) == pytest.approx(13.5)
    assert _dec("voltage", (13 * 1024).to_bytes(4, "little", signed=True)) == pytest.approx(13.0)
    with pytest.raises(objs.DecodeError):
        _dec("voltage", b"\x00\x34\x00")  # 3 bytes: never valid
    with pytest.raises(objs.DecodeError):
        _dec("voltage", (-5 & 0xFFFFFFFF).to_bytes(4, "little"))  # implausible


def test_current_sign_soc_temperature() -> None:
    assert _dec("current", (-12345).to_bytes(4, "little", signed=True)) == pytest.approx(-12.345)
    assert _dec("soc", bytes([87])) == 87
    assert _dec("soc", (87).to_bytes(4, "little")) == 87  # padded to U32 by some firmware
    with pytest.raises(objs.DecodeError):
        _dec("soc", bytes([101]))
    assert _dec("temperature", (-20).to_bytes(2, "little", signed=True)) == pytest.approx(-2.5)
    assert _dec("max_charge_current", (35500).to_bytes(4, "little")) == pytest.approx(35.5)


def test_encode_round_trip_for_every_numeric_object() -> None:
    for o in objs.OBJECTS:
        if o.kind == "str":
            continue
        value = o.lo if o.lo is not None and o.lo > 0 else 1 * o.scale
        assert objs.decode(o, objs.encode(o, value)) == pytest.approx(value, abs=o.scale)


def test_table_is_consistent() -> None:
    assert len(objs.BY_ADDRESS) == len(objs.OBJECTS)
    assert len(objs.BY_KEY) == len(objs.OBJECTS)
    for o in objs.OBJECTS:
        assert o.kind in ("u", "i", "str")
        assert o.kind == "str" or o.size in (1, 2, 4)


def test_firmware_and_pdo_mapping_and_request_kinds() -> None:
    assert objs.parse_firmware("V1.2.3", None) == (1, 2, 3)
    assert objs.parse_firmware(None, (1 << 16) | 4) == (1, 4)
    assert objs.parse_firmware("", None) is None
    assert (1, 1, 0) < (1, 2)  # firmware 1.1 lacks 6051/6052
    assert objs.pdo_mapping_entry(0x60600020) == (0x6060, 0, 32)
    assert objs.sdo_request_kind(bytes([0x40, 0x60, 0x60, 0, 0, 0, 0, 0])) == "upload"
    assert objs.sdo_request_kind(bytes([0x23, 0x60, 0x60, 0, 1, 0, 0, 0])) == "download"
    assert objs.sdo_request_kind(bytes([0x80, 0, 0, 0, 0, 0, 4, 5])) == "abort"
