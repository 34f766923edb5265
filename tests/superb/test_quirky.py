"""The poller against quirky nodes (sim/superb_quirky.py): stale and late answers, unsized
answers, identification that converges, aborts by code, value ages, a cycle that raises.

Expected values are written by hand from the quirky node's settings (tests/superb/rig.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from driver.superb.poller import NodeReport, PollConfig
from tests.superb.rig import EXPECTED_FAST, SERIAL_BASE, QuirkyRig, node

CFG = PollConfig(interval=0.15, slow_interval=1.0, sdo_timeout=0.06, offline_after=3,
                 heartbeat_timeout=1.0, max_age=0.5)

MakeRig = Callable[..., QuirkyRig]


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[MakeRig]:
    made: list[QuirkyRig] = []

    def make(nodes: list[Any], config: PollConfig = CFG) -> QuirkyRig:
        r = QuirkyRig(f"q-{request.node.name}-{len(made)}", nodes, config)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def complete_and_correct(r: NodeReport) -> bool:
    v = r.values
    return r.online and all(v.get(k) == pytest.approx(x, abs=1e-6)
                            for k, x in EXPECTED_FAST.items())


def test_stale_every_7th_and_late_every_5th_stay_in_step(rig: MakeRig) -> None:
    """Issue 12: with a stale answer every 7th request and a late one every 5th, every cycle
    publishes complete, correct values; no object that exists is ever taken for missing."""
    r = rig([node(1, latency=0.003, jitter=0.004, stale_every=7, late_every=5, late=0.09,
                  missing={(0x2014, 0)})])
    r.poll(1)
    r.wait("identified", lambda: r.last(1).online)
    start = r.cycles(1)
    r.wait("40 cycles", lambda: r.cycles(1) >= start + 40, 60)
    reports = r.history[1][start:]
    bad = [rep for rep in reports if not complete_and_correct(rep)]
    assert not bad, f"{len(bad)} of {len(reports)} cycles incomplete or wrong: {bad[:2]}"
    last = r.last(1)
    assert last.missing == {"cycles": 0x06020000}  # 2014:00, the only object the node lacks
    assert last.serial == SERIAL_BASE + 1
    assert last.sdo["discarded"] > 0  # stale and late answers were seen and thrown away
    assert last.counters.retries > 0
    stats = r.nodes[1].stats
    assert stats["stale sent"] > 0 and stats["late sent"] > 0


def test_unsized_answers_decoded_by_declared_type(rig: MakeRig) -> None:
    """Issue 12: expedited answers without the size indicated, padded with 0xAA: decoded by the
    object's type. 6050 is 37 charge cycles, not 4.6 Ah (CiA 418's 1/8 Ah)."""
    r = rig([node(1, unsized=True, pad=0xAA, missing={(0x2014, 0)})])
    r.poll(1)
    r.wait("slow values", lambda: r.last(1).values.get("cycles_6050") is not None)
    last = r.last(1)
    assert complete_and_correct(last)
    assert last.values["cycles_6050"] == 37
    assert last.values["cell_temperature_min"] == pytest.approx(20.0)
    assert last.identity["capacity"] == 100 and last.identity["cells"] == 4
    assert last.identity["software_version"] == "1.3.0"  # segmented, unaffected


def test_identification_converges_with_late_answers(rig: MakeRig) -> None:
    """Issue 12: answers later than three timeouts every 3rd request; identification keeps what
    it has and completes, and never stores a partial identity."""
    r = rig([node(1, late_every=3, late=0.25)])
    r.poll(1)
    r.wait("identified", lambda: r.last(1).serial is not None, 20)
    first = next(rep for rep in r.history[1] if rep.serial is not None)
    assert first.serial == SERIAL_BASE + 1
    assert first.identity["product"] == 0x0E12 and first.firmware == "1.3.0"
    assert first.counters.identify_attempts <= 6
    assert all(rep.serial is None and not rep.online for rep in r.history[1]
               if rep.seq < first.seq)


def test_bad_serial_answer_never_identifies(rig: MakeRig) -> None:
    """A 2-byte answer to the serial (1018:04) is not a serial: no identity until a real one."""
    n = node(1)
    n.short_every = 1  # every answer cut to 2 bytes
    r = rig([n])
    r.poll(1)
    r.wait("three attempts", lambda: r.last(1).counters.identify_attempts >= 3)
    assert r.last(1).serial is None and not r.last(1).online
    assert r.last(1).sdo["malformed"] > 0
    with n.lock:
        n.short_every = 0
    r.wait("identified", lambda: r.last(1).online, 15)
    assert r.last(1).serial == SERIAL_BASE + 1


def test_two_byte_responses_take_the_node_offline(rig: MakeRig) -> None:
    """Issue 11: a 2-byte 0x580+n answer is a failed read; failed reads in a row take the node
    offline: its values are invalid (old code: struct.error, last values kept, online)."""
    n = node(1)
    r = rig([n])
    r.poll(1)
    r.wait("online", lambda: complete_and_correct(r.last(1)))
    with n.lock:
        n.short_every = 1
    r.wait("offline", lambda: not r.last(1).online, 5)
    assert r.last(1).values == {}
    with n.lock:
        n.short_every = 0
    r.wait("back", lambda: complete_and_correct(r.last(1)), 10)


def test_transient_abort_retried_missing_object_remembered(rig: MakeRig) -> None:
    """Issue 11: 0x08000024 (no data) is asked again every cycle and recovers without a reboot;
    0x06020000 (does not exist) is remembered for the firmware and not asked again."""
    n = node(1, missing={(0x6053, 0)})
    n.aborts[(0x6010, 0)] = 0x08000024
    r = rig([n])
    r.poll(1)
    r.wait("online", lambda: r.last(1).online and "ah_since_equalization" in r.last(1).missing)
    assert r.last(1).values.get("temperature") is None
    assert "temperature" in r.last(1).aborted and "temperature" not in r.last(1).missing
    asked = n.stats["upload 6010:00"]
    r.wait("asked again", lambda: n.stats["upload 6010:00"] >= asked + 3)
    with n.lock:
        del n.aborts[(0x6010, 0)]
    r.wait("temperature back", lambda: r.last(1).values.get("temperature") == 20.5)
    eq = n.stats["upload 6053:00"]
    start = r.cycles(1)
    r.wait("slow cycles", lambda: r.cycles(1) >= start + 10, 20)  # slow objects due twice
    assert n.stats["upload 6053:00"] == eq


def test_value_older_than_its_limit_is_invalid(rig: MakeRig) -> None:
    """Issue 11: a value that stops answering while the other objects still answer keeps its
    old value only until it is older than poll interval + max_age (0.15 + 0.5 s)."""
    n = node(1)
    r = rig([n])
    r.poll(1)
    r.wait("online", lambda: complete_and_correct(r.last(1)))
    with n.lock:
        n.silent.add((0x5021, 2))  # the charge limit: never answered again
    r.wait("charge limit invalid", lambda: r.last(1).values.get("max_charge_current") is None,
           5)
    assert r.last(1).online  # the node is online, only that value is too old
    assert r.last(1).ages["max_charge_current"] > 0.65
    assert r.last(1).values["voltage"] == pytest.approx(13.25)


def test_cycle_that_raises_takes_the_node_offline(rig: MakeRig,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: an exception that is not a CAN error (a bug) must not republish the last
    values as valid and keep the node online forever."""
    r = rig([node(1)])
    r.poll(1)
    r.wait("online", lambda: complete_and_correct(r.last(1)))
    poller = r.pollers[1]

    def broken(cfg: PollConfig) -> dict[str, Any]:
        raise ValueError("injected")

    monkeypatch.setattr(poller, "_fresh_tpdo", broken)
    r.wait("offline", lambda: not r.last(1).online and r.last(1).values == {}, 5)
    monkeypatch.undo()
    r.wait("back", lambda: complete_and_correct(r.last(1)), 10)


def test_a_slow_node_does_not_delay_the_others(rig: MakeRig) -> None:
    """All nodes in the port's one SDO loop: node 1 answers nothing (every read times out),
    node 3 answers every object 40 ms late; node 2's cycles keep their interval within one SDO
    timeout. Had node 2 to wait for node 1, its cycles would be at least two timeouts late
    (a silent node's read and its retry); the margin of one timeout (0.3 s) is there for a
    loaded machine, where a cycle can start 60-90 ms late whatever the design."""
    cfg = replace(CFG, interval=0.5, sdo_timeout=0.3, heartbeat_timeout=2.0)
    slow = node(3, latency=0.04)
    dead = node(1)
    r = rig([dead, node(2), slow], cfg)
    r.poll(1, 2, 3)
    r.wait("node 2 online", lambda: r.last(2).online)
    with dead.lock:
        dead.sdo_enabled = False
    start = r.cycles(2)
    r.wait("12 cycles of node 2", lambda: r.cycles(2) >= start + 12, 20)
    with r.cond:
        reps = r.history[2][start:]
        times = r.arrivals[2][start:]
    assert all(complete_and_correct(rep) for rep in reps)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # a cycle starts every interval; its reads take a few ms: one SDO timeout is the margin
    assert max(gaps) <= cfg.interval + cfg.sdo_timeout, gaps
    assert r.last(1).counters.sdo_timeouts >= 6  # node 1 did wait for its timeouts meanwhile
    r.wait("node 1 offline", lambda: not r.last(1).online, 5)
