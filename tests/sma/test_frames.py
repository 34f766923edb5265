"""Frame codec tests against byte vectors worked out by hand from PROTOCOLS.md §2."""

from __future__ import annotations

import can
import cantools
import pytest

from driver.sma import frames
from driver.sma.frames import BmsValues, FrameError


def msg(fid: int, data: str) -> can.Message:
    return can.Message(arbitration_id=fid, data=bytes.fromhex(data), is_extended_id=False)


def values(**kw: object) -> BmsValues:
    base: dict[str, object] = dict(cvl=56.8, ccl=100.0, dcl=200.0, dvl=44.8, soc=87, soh=99,
                                   soc_hr=87.25, voltage=53.12, current=12.3, temperature=25.0)
    base.update(kw)
    return BmsValues(**base)  # type: ignore[arg-type]


def by_id(frame_set: tuple[can.Message, ...]) -> dict[int, bytes]:
    return {f.arbitration_id: bytes(f.data) for f in frame_set}


def test_0x351_limits_little_endian_0_1_units() -> None:
    # 56.8 V -> 568 = 0x0238; 100.0 A -> 1000 = 0x03E8; 200 A -> 0x07D0; 44.8 V -> 0x01C0
    assert by_id(frames.encode_bms(values()))[0x351] == bytes.fromhex("3802e803d007c001")


def test_0x351_negative_current_is_twos_complement() -> None:
    assert by_id(frames.encode_bms(values(ccl=-1.5)))[0x351][2:4] == bytes.fromhex("f1ff")


def test_0x355_soc_soh_and_high_res() -> None:
    assert by_id(frames.encode_bms(values()))[0x355] == bytes.fromhex("570063001522")


def test_0x355_high_res_invalid_is_ffff() -> None:
    assert by_id(frames.encode_bms(values(soc_hr=None)))[0x355][4:6] == b"\xff\xff"


def test_0x355_high_res_never_sends_the_marker_for_a_real_value() -> None:
    assert by_id(frames.encode_bms(values(soc_hr=655.35)))[0x355][4:6] == b"\xfe\xff"


def test_0x356_plus_is_charging() -> None:
    # 53.12 V -> 5312 = 0x14C0, +12.3 A (charging) -> 0x007B, 25.0 °C -> 0x00FA
    assert by_id(frames.encode_bms(values()))[0x356] == bytes.fromhex("c0147b00fa00")
    # discharging 12.3 A -> -123 = 0xFF85, -5.5 °C -> -55 = 0xFFC9
    got = by_id(frames.encode_bms(values(current=-12.3, temperature=-5.5)))[0x356]
    assert got == bytes.fromhex("c01485ffc9ff")


def test_0x35a_all_ok_is_10_per_item() -> None:
    assert by_id(frames.encode_bms(values()))[0x35A] == bytes.fromhex("aaaaaa02aaaaaa02")


def test_0x35a_alarm_and_warning_items() -> None:
    fs = frames.encode_bms(values(alarms=frozenset({"HighVoltage"}),
                                  warnings=frozenset({"General", "CellImbalance"})))
    # alarm byte 0: items General 10, HighVoltage 01, LowVoltage 10, HighTemperature 10 = 0xA6
    # warning byte 4: General 01 -> 0xA9; byte 7: CellImbalance 01 -> 0x01
    assert by_id(fs)[0x35A] == bytes.fromhex("a6aaaa02a9aaaa01")
    back = frames.decode_bms(fs)
    assert back["alarms"] == {"HighVoltage"}
    assert back["warnings"] == {"General", "CellImbalance"}


def test_0x35a_unknown_item_refused() -> None:
    with pytest.raises(ValueError, match="unknown 0x35A"):
        frames.encode_bms(values(alarms=frozenset({"Nonsense"})))


def test_0x35e_0x35f() -> None:
    fs = by_id(frames.encode_bms(values(manufacturer="SuperB", battery_type=1, bms_version=2,
                                        capacity_ah=300.4)))
    assert fs[0x35E] == b"SuperB  "
    assert fs[0x35F] == bytes.fromhex("010002002c010000")


def test_frame_set_ids_and_lengths() -> None:
    fs = frames.encode_bms(values())
    assert [f.arbitration_id for f in fs] == [0x351, 0x355, 0x356, 0x35A, 0x35E, 0x35F]
    assert all(not f.is_extended_id for f in fs)
    assert [len(f.data) for f in fs] == [8, 6, 6, 8, 8, 8]


def test_startstop_and_quickstop() -> None:
    # 4 bytes [cmd, 0, 0, 0], as SMAVenusDriver sends it in the field
    assert bytes(frames.encode_startstop(True).data) == b"\x01\x00\x00\x00"
    assert bytes(frames.encode_startstop(False).data) == b"\x02\x00\x00\x00"
    q = frames.encode_quickstop()
    assert q.arbitration_id == 0x00F and bytes(q.data) == bytes(8)


def test_0x305_plus_is_discharging() -> None:
    # 52.0 V = 0x0208, +15.0 A (discharging) = 0x0096, 23.5 °C = 0x00EB, 64.5 % = 0x0285
    fid, v = frames.decode_si(msg(0x305, "08029600eb008502"))
    assert fid == 0x305
    assert v["SiBatteryVoltage"] == 52.0
    assert v["SiBatteryCurrent"] == 15.0
    assert v["BatteryCurrentCharging"] == -15.0
    assert v["SiBatteryTemperature"] == 23.5
    assert v["SiSoc"] == 64.5


def test_0x305_invalid_markers() -> None:
    _, v = frames.decode_si(msg(0x305, "ffff0080eb00ffff"))
    assert v["SiBatteryVoltage"] is None
    assert v["SiBatteryCurrent"] is None and v["BatteryCurrentCharging"] is None
    assert v["SiSoc"] is None


def test_0x300_power_signed_and_invalid() -> None:
    _, v = frames.decode_si(msg(0x300, "f4ff05000080"))
    assert v["ExtActivePowerL1"] == -1.2
    assert v["ExtActivePowerL2"] == 0.5
    assert v["ExtActivePowerL3"] is None


def test_0x304_voltage_frequency() -> None:
    # 230.4 V = 0x0900, 0 V, invalid, 50.02 Hz = 5002 = 0x138A
    _, v = frames.decode_si(msg(0x304, "00090000ffff8a13"))
    assert v["Ac1VoltageL1"] == 230.4 and v["Ac1VoltageL2"] == 0.0
    assert v["Ac1VoltageL3"] is None and v["Ac1Frequency"] == 50.02


def test_0x307_flags() -> None:
    _, v = frames.decode_si(msg(0x307, "0001c0020200"))
    f = v["flags"]
    assert (f.run, f.gd_on, f.ext_vf_ok, f.gn_rn, f.overload) == (True, True, True, True, True)
    assert not f.error and not f.ext_src_conn
    _, v = frames.decode_si(msg(0x307, "000000020000"))
    f = v["flags"]
    assert f.run and not f.gd_on and not f.ext_vf_ok and not f.gn_rn


def test_flags_round_trip() -> None:
    f = frames.SiFlags(run=True, gd_on=False, ext_vf_ok=True, gn_rn=False, error=True,
                       auto_gn=False, overload=False, ext_src_conn=True)
    m = frames.encode_signals(0x307, frames.flags_signals(f))
    assert frames.decode_si(m)[1]["flags"] == f


@pytest.mark.parametrize("fid,data", [(0x305, "0802"), (0x307, ""), (0x307, "0001c00202"),
                                      (0x300, "f4ff0500")])
def test_too_short_refused(fid: int, data: str) -> None:
    with pytest.raises(frames.FrameTooShort, match="data bytes"):
        frames.decode_signals(msg(fid, data))


@pytest.mark.parametrize("data", ["0001c0020200", "0001c002020017", "0001c00202001700"])
def test_0x307_with_sync_byte_accepted(data: str) -> None:
    """The field's 0x307 is 7-8 bytes (a sync byte after the flags): accepted."""
    _, v = frames.decode_si(msg(0x307, data))
    f = v["flags"]
    assert (f.run, f.gd_on, f.ext_vf_ok, f.gn_rn, f.overload) == (True, True, True, True, True)


def test_longer_frames_accepted_extra_bytes_ignored() -> None:
    _, v = frames.decode_si(msg(0x300, "f4ff0500008012345678"[:16]))
    assert v["ExtActivePowerL1"] == -1.2 and v["ExtActivePowerL3"] is None


def test_unknown_id_refused() -> None:
    with pytest.raises(FrameError):
        frames.decode_si(msg(0x123, "00"))
    with pytest.raises(FrameError):
        frames.decode_signals(msg(0x7FF, "00"))


def test_extended_frame_refused() -> None:
    m = can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=True)
    with pytest.raises(FrameError):
        frames.decode_si(m)


def test_monitor_decode() -> None:
    assert frames.decode(msg(0x123, "00")) is None
    line = frames.decode(msg(0x305, "08029600eb008502"))
    assert line is not None and "SiBatteryVoltage=52V" in line
    line = frames.decode(frames.encode_bms(values(alarms=frozenset({"LowVoltage"})))[3])
    assert line is not None and "LowVoltage" in line
    assert "stop" in (frames.decode(frames.encode_startstop(False)) or "")
    assert "undecodable" in (frames.decode(msg(0x305, "01")) or "")


def test_dbc_usable_with_plain_cantools() -> None:
    """Users decode captures with the DBC alone: check it agrees with the codec."""
    db = cantools.database.load_file(str(frames.DBC_FILE))
    out = db.decode_message(0x351, bytes.fromhex("3802e803d007c001"))
    assert out["ChargeVoltageLimit"] == pytest.approx(56.8)
    assert out["DischargeVoltageLimit"] == pytest.approx(44.8)


def test_can_monitor_plugin_decodes_sma_frames() -> None:
    from driver import canmon

    reg = canmon.DecoderRegistry()
    canmon.load_plugins(reg)
    name, text = reg.decode(0x351, bytes.fromhex("3802e803d007c001"))
    assert name == "sma" and text is not None and "ChargeVoltageLimit=56.8V" in text
    name, text = reg.decode(0x00F, bytes(8))
    assert name == "sma" and text is not None and "QuickStop" in text
