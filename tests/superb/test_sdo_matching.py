"""SDO transactions that match answers to requests (issue 12, item 1), at the CAN port.

A scripted node on a python-can virtual bus answers each request with frames written here by
hand (CiA 301 layouts): answers to another object, aborts for another object, answers after the
client's timeout, frames cut to 2 bytes. The driver's :class:`CanPort` (its SDO loop
underneath) must return the right object's value or fail the read cleanly, and a late answer
must never reach a later request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import can
import pytest

from driver.superb.canport import BadResponse, CanPort, PortError, SdoAbort, SdoTimeout

NODE = 5
Script = Callable[[bytes], list[tuple[float, bytes]]]


def upload_answer(index: int, sub: int, data: bytes) -> bytes:
    """An expedited upload answer with the size indicated (0x43/47/4B/4F)."""
    cmd = 0x43 | ((4 - len(data)) << 2)
    return bytes([cmd]) + index.to_bytes(2, "little") + bytes([sub]) + data.ljust(4, b"\0")


def abort_frame(index: int, sub: int, code: int) -> bytes:
    return bytes([0x80]) + index.to_bytes(2, "little") + bytes([sub]) + code.to_bytes(4, "little")


class ScriptedNode:
    """Answers every upload request to 0x600+NODE with what ``script(request)`` returns:
    [(delay in seconds, frame data)]. Records the requests it got."""

    def __init__(self, channel: str, script: Script) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.script = script
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.bus.recv(0.05)
            if msg is None or msg.arbitration_id != 0x600 + NODE:
                continue
            req = bytes(msg.data)
            self.requests.append(req)
            for delay, data in self.script(req):
                threading.Timer(delay, self._send, (data,)).start()

    def _send(self, data: bytes) -> None:
        if not self._stop.is_set():
            self.bus.send(can.Message(arbitration_id=0x580 + NODE, data=data,
                                      is_extended_id=False))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        time.sleep(0.3)  # let pending timers fire into a stopped node
        self.bus.shutdown()


@pytest.fixture
def port(request: pytest.FixtureRequest) -> Iterator[CanPort]:
    p = CanPort(f"m-{request.node.name}", 250000,
                lambda iface, rate: can.Bus(interface="virtual", channel=iface))
    p.start()
    assert p.wait_open(2)
    yield p
    p.stop()


def _mux(req: bytes) -> tuple[int, int]:
    return int.from_bytes(req[1:3], "little"), req[3]


def test_answer_for_another_object_is_discarded_and_the_right_one_taken(port: CanPort) -> None:
    def script(req: bytes) -> list[tuple[float, bytes]]:
        # first a repeat of an answer to 6081:00 (SoC 64 %), then the right answer
        return [(0.002, upload_answer(0x6081, 0, bytes([64]))),
                (0.010, upload_answer(*_mux(req), (13568).to_bytes(4, "little")))]

    peer = ScriptedNode(port.interface, script)
    try:
        data = port.upload(NODE, 0x6060, 0, 0.2)
    finally:
        peer.close()
    assert data == (13568).to_bytes(4, "little")  # 13.25 V in 1/1024 V
    assert port.sdo_diag(NODE).discarded == 1


def test_abort_for_another_object_is_not_filed_under_this_one(port: CanPort) -> None:
    def script(req: bytes) -> list[tuple[float, bytes]]:
        return [(0.002, abort_frame(0x6051, 0, 0x06020000)),
                (0.010, upload_answer(*_mux(req), bytes([64])))]

    peer = ScriptedNode(port.interface, script)
    try:
        assert port.upload(NODE, 0x6081, 0, 0.2) == bytes([64])
    finally:
        peer.close()
    assert port.sdo_diag(NODE).discarded == 1


def test_abort_for_this_object_counts(port: CanPort) -> None:
    peer = ScriptedNode(port.interface, lambda req: [(0.002, abort_frame(*_mux(req),
                                                                         0x06020000))])
    try:
        with pytest.raises(SdoAbort) as err:
            port.upload(NODE, 0x6051, 0, 0.2)
    finally:
        peer.close()
    assert err.value.code == 0x06020000


def test_late_answer_never_reaches_the_next_request(port: CanPort) -> None:
    """The answer to 6060:00 comes 0.25 s late (timeout 0.15 s), in the middle of the request
    for 2010:00; that request must get its own answer (-5000 mA), not 6060's."""

    def script(req: bytes) -> list[tuple[float, bytes]]:
        index, sub = _mux(req)
        if req[0] >> 5 != 2:
            return []  # the client's abort after its timeout
        if index == 0x6060:
            return [(0.25, upload_answer(index, sub, (13568).to_bytes(4, "little")))]
        return [(0.15, upload_answer(index, sub, (-5000).to_bytes(4, "little", signed=True)))]

    peer = ScriptedNode(port.interface, script)
    try:
        with pytest.raises(SdoTimeout):
            port.upload(NODE, 0x6060, 0, 0.15)
        t0 = time.monotonic()
        data = port.upload(NODE, 0x2010, 0, 0.3)
        took = time.monotonic() - t0
    finally:
        peer.close()
    assert int.from_bytes(data, "little", signed=True) == -5000
    assert took >= 0.12  # it waited for its own answer, past the late one at ~0.1 s
    assert port.sdo_diag(NODE).discarded == 1
    # the client aborted its own timed-out upload with that upload's multiplexer
    aborts = [r for r in peer.requests if r[0] == 0x80]
    assert aborts and aborts[0][1:4] == bytes([0x60, 0x60, 0x00])
    assert int.from_bytes(aborts[0][4:8], "little") == 0x05040000


def test_two_byte_response_is_a_failed_read_not_an_exception(port: CanPort) -> None:
    """canopen raises struct.error on a 2-byte answer; the port must turn it into a failed
    read (a PortError the poller counts), whatever the kind."""
    peer = ScriptedNode(port.interface, lambda req: [(0.002, bytes([0x4B, 0x60]))])
    try:
        with pytest.raises(PortError) as err:
            port.upload(NODE, 0x6060, 0, 0.1)
    finally:
        peer.close()
    assert isinstance(err.value, SdoTimeout | BadResponse)
    assert port.sdo_diag(NODE).malformed == 1


def test_segmented_upload_skips_a_repeated_initiate_answer(port: CanPort) -> None:
    text = b"Epsilon V2 12V"

    def script(req: bytes) -> list[tuple[float, bytes]]:
        cs = req[0] >> 5
        if cs == 2:
            return [(0.002, bytes([0x41, 0x08, 0x10, 0x00]) + len(text).to_bytes(4, "little"))]
        if cs == 3:
            toggle = req[0] & 0x10
            first = toggle == 0
            chunk = text[:7] if first else text[7:]
            cmd = toggle | ((7 - len(chunk)) << 1) | (0 if first else 1)
            # before the segment, a repeat of the initiate answer (another command specifier)
            return [(0.002, bytes([0x41, 0x08, 0x10, 0x00]) + len(text).to_bytes(4, "little")),
                    (0.008, bytes([cmd]) + chunk.ljust(7, b"\0"))]
        return []

    peer = ScriptedNode(port.interface, script)
    try:
        assert port.upload(NODE, 0x1008, 0, 0.2) == text
    finally:
        peer.close()
    assert port.sdo_diag(NODE).discarded == 2
