"""One SDO thread per CAN interface (issue 12, item 1): every battery's poller is a task of the
port's SDO loop, transfers of different nodes run side by side, a node that does not answer
delays only its own cycle (never the others' by one timeout), and one upload is a state machine
that takes only the answer to its own request. Frames are written here by hand (CiA 301)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from driver.superb.poller import PollConfig
from driver.superb.sdo import BadResponse, SdoAbort, UploadTransfer
from tests.superb.rig import QuirkyRig, node


@pytest.fixture
def make_rig(request: pytest.FixtureRequest) -> Iterator[list[QuirkyRig]]:
    made: list[QuirkyRig] = []
    yield made
    for r in made:
        r.close()


def test_a_node_that_never_answers_delays_no_other_node(make_rig: list[QuirkyRig],
                                                        request: pytest.FixtureRequest) -> None:
    """Node 3 sends heartbeats but never answers an SDO request: each of its reads ends at the
    0.5 s timeout, three in a row per cycle. Nodes 1 and 2 on the same port (the same thread)
    keep their 1 s cycle, each well under one timeout, all the time."""
    silent = node(3)
    silent.sdo_enabled = False
    cfg = PollConfig(interval=1.0, sdo_timeout=0.5, offline_after=3)
    rig = QuirkyRig(f"loop-{request.node.name}", [node(1), node(2), silent], cfg)
    make_rig.append(rig)
    rig.poll(1, 2, 3)
    rig.wait("six reports of nodes 1 and 2 and three of node 3",
             lambda: rig.cycles(1) >= 6 and rig.cycles(2) >= 6 and rig.cycles(3) >= 3, 15)
    for n in (1, 2):
        reports = rig.history[n][:6]
        assert all(r.online for r in reports[1:]), [r.state for r in reports]
        slowest = max(r.cycle_time for r in reports)
        assert slowest < 0.5, f"node {n}: a cycle took {slowest:.2f} s (one timeout is 0.5 s)"
        gaps = [b - a for a, b in zip(rig.arrivals[n][1:6], rig.arrivals[n][2:7], strict=False)]
        assert all(0.8 <= g <= 1.4 for g in gaps), f"node {n}: reports {gaps} s apart"
    # node 3 did wait for its timeouts, at least one in every cycle (the others ran meanwhile)
    r3 = rig.history[3]
    assert not any(r.online for r in r3)
    assert all(r.cycle_time >= 0.5 for r in r3), [round(r.cycle_time, 2) for r in r3]
    assert max(r.cycle_time for r in r3) >= 1.0 and r3[-1].counters.sdo_timeouts >= 4


def test_every_poller_of_a_port_runs_on_its_one_sdo_thread(make_rig: list[QuirkyRig],
                                                           request: pytest.FixtureRequest) -> None:
    cfg = PollConfig(interval=0.5, sdo_timeout=0.3)
    ids = list(range(1, 9))
    rig = QuirkyRig(f"loop-{request.node.name}", [node(n) for n in ids], cfg)
    make_rig.append(rig)
    before = {t.name for t in threading.enumerate()}
    seen_on: set[str] = set()
    got = rig._got

    def recording(report: object) -> None:
        seen_on.add(threading.current_thread().name)
        got(report)  # type: ignore[arg-type]

    rig._got = recording  # type: ignore[method-assign]
    rig.poll(*ids)
    rig.wait("all eight online", lambda: all(rig.last(n).online for n in ids), 10)
    assert {t.name for t in threading.enumerate()} == before  # no thread per battery
    assert seen_on == {f"sdo-{rig.port.interface}"}


def test_stop_with_join_hands_on_no_more_reports_and_wake_starts_a_cycle(
        make_rig: list[QuirkyRig], request: pytest.FixtureRequest) -> None:
    cfg = PollConfig(interval=5.0, sdo_timeout=0.3)
    rig = QuirkyRig(f"loop-{request.node.name}", [node(1)], cfg)
    make_rig.append(rig)
    rig.poll(1)
    rig.wait("a first report", lambda: rig.cycles(1) >= 1, 5)
    t0 = time.monotonic()
    rig.pollers[1].wake()  # the poll interval is 5 s: only the wake explains a report now
    rig.wait("the woken cycle", lambda: rig.cycles(1) >= 2, 2)
    assert time.monotonic() - t0 < 1.0
    rig.pollers[1].wake()
    rig.pollers[1].stop(join=True)
    count = rig.cycles(1)
    time.sleep(1.0)
    assert rig.cycles(1) == count
    rig.pollers.clear()


def test_an_unusable_timeout_fails_the_read_at_once(make_rig: list[QuirkyRig],
                                                     request: pytest.FixtureRequest) -> None:
    """A NaN, zero or huge SDO timeout would make a transfer that never ends (NaN compares
    false with every deadline): the read fails at once instead, and the next one works."""
    rig = QuirkyRig(f"loop-{request.node.name}", [node(1)], PollConfig())
    make_rig.append(rig)
    for bad in (float("nan"), 0.0, -1.0, float("inf"), 3600.0):
        t0 = time.monotonic()
        with pytest.raises(BadResponse, match="not usable"):
            rig.port.upload(1, 0x1018, 4, bad)
        assert time.monotonic() - t0 < 0.5
    assert rig.port.upload(1, 0x1018, 4, 0.3) == (2300001).to_bytes(4, "little")


# -- one upload, frame by frame ------------------------------------------------------------------
def test_expedited_answers_sized_and_unsized() -> None:
    t = UploadTransfer(0x6081, 0)
    assert t.first() == bytes([0x40, 0x81, 0x60, 0x00, 0, 0, 0, 0])
    assert t.on_frame(bytes([0x4F, 0x81, 0x60, 0x00, 64, 0xAA, 0xAA, 0xAA])) is True
    assert (t.data, t.sized) == (bytes([64]), True)
    u = UploadTransfer(0x6050, 0)
    assert u.mismatch(bytes([0x42, 0x50, 0x60, 0x00, 37, 0, 0, 0])) is None
    assert u.on_frame(bytes([0x42, 0x50, 0x60, 0x00, 37, 0, 0, 0])) is True
    assert (u.data, u.sized) == (bytes([37, 0, 0, 0]), False)  # the table decides, not 4 bytes


def test_answers_that_are_not_this_transfers() -> None:
    t = UploadTransfer(0x6060, 0)
    assert t.mismatch(bytes([0x4B, 0x81, 0x60, 0x00, 64, 0, 0, 0])) == "answer for another object"
    assert t.mismatch(bytes([0x80, 0x51, 0x60, 0x00, 0, 0, 2, 6])) == "abort for another object"
    assert t.mismatch(bytes([0x4B, 0x60])) == "malformed"
    assert t.mismatch(bytes([0x00, 0x60, 0x60, 0x00, 0, 0, 0, 0])) == "not an upload answer"
    with pytest.raises(SdoAbort) as err:
        assert t.mismatch(bytes([0x80, 0x60, 0x60, 0x00, 0, 0, 2, 6])) is None
        t.on_frame(bytes([0x80, 0x60, 0x60, 0x00, 0, 0, 2, 6]))
    assert err.value.code == 0x06020000
    assert t.timeout_abort() == bytes([0x80, 0x60, 0x60, 0x00, 0x00, 0x00, 0x04, 0x05])


def test_segmented_upload_with_toggle_and_size() -> None:
    text = b"Epsilon V2 12V"
    t = UploadTransfer(0x1008, 0)
    nxt = t.on_frame(bytes([0x41, 0x08, 0x10, 0x00, len(text), 0, 0, 0]))
    assert nxt == bytes([0x60, 0, 0, 0, 0, 0, 0, 0])
    # a repeat of the initiate answer is not a segment; a segment with toggle 1 is not the first
    assert t.mismatch(bytes([0x41, 0x08, 0x10, 0x00, len(text), 0, 0, 0])) == \
        "not a segment answer"
    assert t.mismatch(bytes([0x10]) + text[:7]) == "toggle bit repeated"
    assert t.on_frame(bytes([0x00]) + text[:7]) == bytes([0x70, 0, 0, 0, 0, 0, 0, 0])
    assert t.mismatch(bytes([0x00]) + text[:7]) == "toggle bit repeated"
    assert t.on_frame(bytes([0x10 | 0x01]) + text[7:]) is True  # 7 bytes, last segment
    assert (t.data, t.sized) == (text, True)


def test_segmented_answers_that_cannot_be_an_object() -> None:
    t = UploadTransfer(0x1008, 0)
    t.on_frame(bytes([0x41, 0x08, 0x10, 0x00, 10, 0, 0, 0]))  # 10 bytes indicated
    with pytest.raises(BadResponse):
        t.on_frame(bytes([0x01 | (4 << 1)]) + b"abc\0\0\0\0")  # last segment: only 3 bytes
    runaway = UploadTransfer(0x1008, 0)
    with pytest.raises(BadResponse):
        runaway.on_frame(bytes([0x41, 0x08, 0x10, 0x00, 0, 0, 1, 0]))  # 64 KiB indicated
    endless = UploadTransfer(0x100A, 0)
    endless.on_frame(bytes([0x40, 0x0A, 0x10, 0x00, 0, 0, 0, 0]))  # size not indicated
    with pytest.raises(BadResponse):
        for i in range(200):
            endless.on_frame(bytes([0x10 if i % 2 else 0x00]) + b"x" * 7)


def test_the_driver_reads_what_canopens_own_sdo_client_reads(
        request: pytest.FixtureRequest) -> None:
    """The same simulated battery (canopen's SDO server) read by canopen's SdoClient and by the
    driver's SDO loop: expedited (vendor, serial) and segmented (device name) give the same
    bytes, so the loop speaks the protocol as the reference client does."""
    import can
    import canopen

    from driver.superb.canport import CanPort
    from sim.superb import Simulator, make_batteries

    channel = f"ref-{request.node.name}"
    sim = Simulator(can.Bus(interface="virtual", channel=channel), make_batteries([4]))
    sim.start()
    net = canopen.Network(can.Bus(interface="virtual", channel=channel))
    net.connect()
    ref = net.add_node(canopen.RemoteNode(4, canopen.ObjectDictionary()))
    port = CanPort(channel, 250000, lambda i, b: can.Bus(interface="virtual", channel=i))
    port.start()
    objects = ((0x1018, 1), (0x1018, 4), (0x1008, 0), (0x100A, 0))  # values that do not move
    try:
        # canopen's client first, alone on the channel (it would take the loop's answers too)
        expected = {o: ref.sdo.upload(*o) for o in objects}
        net.disconnect()
        assert port.wait_open(2)
        for index, sub in objects:
            assert port.upload(4, index, sub, 0.5) == expected[index, sub], f"{index:04X}:{sub}"
        assert len(expected[0x1008, 0]) > 4  # a segmented transfer was among them
    finally:
        port.stop()
        net.disconnect()
        sim.close()
