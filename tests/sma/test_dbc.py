"""The bridge's own DBC reader agrees with cantools on every frame of ``sma_si.dbc``."""

from __future__ import annotations

import random

import cantools
import pytest

from driver.sma import dbc, frames


def test_every_message_matches_cantools():
    ours = dbc.load(frames.DBC_FILE)
    theirs = cantools.database.load_file(str(frames.DBC_FILE), strict=True)
    assert sorted(ours) == sorted(m.frame_id for m in theirs.messages)
    rng = random.Random(7)
    for ref in theirs.messages:
        msg = ours[ref.frame_id]
        assert (msg.name, msg.length) == (ref.name, ref.length)
        assert [s.name for s in msg.signals] == [s.name for s in ref.signals]
        for s, r in zip(msg.signals, ref.signals, strict=True):
            assert (s.start, s.length, s.is_signed, s.scale) == (r.start, r.length,
                                                                   r.is_signed, r.scale)
            assert s.choices == {int(k): str(v) for k, v in (r.choices or {}).items()}
        for _ in range(200):
            data = bytes(rng.randrange(256) for _ in range(ref.length))
            expect = ref.decode(data, decode_choices=False, scaling=False)
            assert msg.decode(data) == {k: int(v) for k, v in expect.items()}
            raws = msg.decode(data)
            encoded = msg.encode(raws)
            assert encoded == ref.encode(raws, scaling=False, strict=False)
            assert msg.decode(encoded) == raws


def test_unsupported_constructs_are_refused():
    base = 'BO_ 849 M: 8 BMS\n SG_ A : 0|16@1+ (0.1,0) [0|1] "V" SI\n'
    assert dbc.parse(base)[849].signals[0].name == "A"
    for bad, why in [
        (base.replace("@1+", "@0+"), "little-endian"),
        (base.replace("(0.1,0)", "(0.1,5)"), "offsets"),
        (base + "\nSG_MUL_VAL_ 849 A B 0-0;\n", "cannot read signal"),
        (base + "\nEV_ X: 0 [0|1] \"\" 0 1 DUMMY_NODE_VECTOR0 Vector__XXX;\n", "unsupported"),
        (base.replace("0|16", "60|16"), "does not fit"),
        ("BO_ 2147484497 X: 8 BMS\n", "extended"),
        (base + "\nVAL_ 849 Nope 1 \"x\" ;\n", "unknown signal"),
    ]:
        with pytest.raises(dbc.DbcError, match=why):
            dbc.parse(bad)


def test_the_bridge_does_not_load_cantools():
    import subprocess
    import sys

    code = ("import sys, driver.sma.main, driver.sma.frames as f; f.database(); "
            "print('cantools' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
