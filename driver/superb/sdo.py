"""SDO upload transfers that match every answer to the request it belongs to (CiA 301 §7.2.4).

CiA 301 SDO has no transaction id: an answer names only the object (the multiplexer, index and
sub-index in bytes 1-3 of an initiate-upload answer and of an abort) and, in a segmented
transfer, the toggle bit. A client that takes the first frame arriving after its request is put
out of step for good by one answer that comes late or twice (docs/superb.md, "SDO transactions").

:class:`UploadTransfer` is one upload as a state machine without threads or I/O: it says which
frame to send, and judges each frame the node sends back:

* an initiate-upload answer or an abort counts only if its multiplexer is the request's; a
  segment answer only if its command specifier and toggle bit are the expected ones;
* anything else (another object's answer or abort, a repeated answer, a frame shorter than the 8
  bytes every SDO frame has) is discarded and counted in :class:`SdoDiag`, and the transfer
  keeps waiting for the right answer until its timeout;
* an expedited answer without the size indicated carries 4 bytes: the caller decodes them by the
  object's declared type (never by this length);
* a timeout is answered with the abort for *this* transfer (0x05040000 with its multiplexer).

The transfers of a CAN interface are run by :class:`driver.superb.sdoloop.SdoLoop`. Nothing here
writes to a node: only uploads exist.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

#: command specifiers (CiA 301): the top 3 bits of byte 0
_CCS_SEGMENT, _CCS_UPLOAD, _CS_ABORT = 3, 2, 4
_SCS_SEGMENT, _SCS_UPLOAD = 0, 2
_TOGGLE = 0x10
#: CiA 301 abort code "SDO protocol timed out", sent when our own upload gets no answer
ABORT_TIMED_OUT = 0x05040000
#: a segmented answer longer than this is not an object of this table (a runaway node)
MAX_SEGMENTED = 1024

NO_RESPONSE = "No SDO response received"


@dataclass
class SdoDiag:
    """Per-node counts of answers that did not belong to the pending request."""

    discarded: int = 0  #: answers to another object, repeated answers, unexpected kinds
    malformed: int = 0  #: frames shorter than 8 bytes
    flushed: int = 0  #: answers that arrived while no request was pending
    last: str = ""  #: what the last discarded frame was
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> dict[str, int | str]:
        with self.lock:
            return {"discarded": self.discarded, "malformed": self.malformed,
                    "flushed": self.flushed, "last": self.last}

    def count(self, why: str, frame: bytes) -> None:
        with self.lock:
            if why == "malformed":
                self.malformed += 1
            elif why == "flushed":
                self.flushed += 1
            else:
                self.discarded += 1
            self.last = f"{'no request pending' if why == 'flushed' else why}: {frame.hex()}"


@dataclass(frozen=True, slots=True)
class Upload:
    """A request to read one object (what a poll task yields to its :class:`SdoLoop`)."""

    index: int
    subindex: int
    timeout: float


class PortError(Exception):
    """Base of the errors an SDO upload can end with."""


class SdoAbort(PortError):
    """The node answered with an SDO abort."""

    def __init__(self, code: int) -> None:
        super().__init__(f"SDO abort 0x{code:08X}")
        self.code = code


class SdoTimeout(PortError):
    """The node did not answer in time."""


class BadResponse(PortError):
    """The node answered with something that is not a valid upload (sizes that disagree, too
    long, a frame that cannot be decoded)."""


class BusDown(PortError):
    """The CAN interface is not open, or sending failed (bus-off, no buffer space)."""


def request_frame(index: int, subindex: int) -> bytes:
    """The initiate-upload request for (index, sub-index)."""
    return struct.pack("<BHB4x", _CCS_UPLOAD << 5, index, subindex)


def abort_frame(index: int, subindex: int, code: int) -> bytes:
    return struct.pack("<BHBL", _CS_ABORT << 5, index, subindex, code)


class UploadTransfer:
    """One SDO upload. :meth:`on_frame` returns ``None`` (keep waiting), the next frame to send
    (segmented transfer), or ``True`` once :attr:`data` is complete; it raises
    :class:`SdoAbort` or :class:`BadResponse`."""

    __slots__ = ("_parts", "_segmented", "_size", "_toggle", "data", "index", "sized", "subindex")

    def __init__(self, index: int, subindex: int) -> None:
        self.index = index
        self.subindex = subindex
        self._segmented = False
        self._toggle = 0
        self._size: int | None = None
        self._parts = bytearray()
        self.data = b""
        self.sized = False

    def first(self) -> bytes:
        return request_frame(self.index, self.subindex)

    def timeout_abort(self) -> bytes:
        return abort_frame(self.index, self.subindex, ABORT_TIMED_OUT)

    def mismatch(self, frame: bytes) -> str | None:
        """Why ``frame`` does not answer this transfer now (None: it does)."""
        if len(frame) < 8:
            return "malformed"
        cs = frame[0] >> 5
        if cs == _CS_ABORT or not self._segmented:
            if cs not in (_CS_ABORT, _SCS_UPLOAD):
                return "not an upload answer"
            mux = (frame[1] | frame[2] << 8, frame[3])
            if mux != (self.index, self.subindex):
                return ("abort" if cs == _CS_ABORT else "answer") + " for another object"
            return None
        if cs != _SCS_SEGMENT:
            return "not a segment answer"
        return None if frame[0] & _TOGGLE == self._toggle else "toggle bit repeated"

    def on_frame(self, frame: bytes) -> bytes | bool:
        """Take an answer that :meth:`mismatch` accepted."""
        cmd = frame[0]
        if cmd >> 5 == _CS_ABORT:
            raise SdoAbort(int.from_bytes(frame[4:8], "little"))
        if not self._segmented:
            if cmd & 0x02:  # expedited
                if cmd & 0x01:  # size indicated: 4 - n bytes are data
                    self.data, self.sized = bytes(frame[4:8 - ((cmd >> 2) & 3)]), True
                else:
                    self.data, self.sized = bytes(frame[4:8]), False
                return True
            self._segmented = True
            self._size = int.from_bytes(frame[4:8], "little") if cmd & 0x01 else None
            if self._size is not None and self._size > MAX_SEGMENTED:
                raise BadResponse(f"{self._size} bytes indicated")
            return bytes([_CCS_SEGMENT << 5 | self._toggle]) + bytes(7)
        self._parts += frame[1:8 - ((cmd >> 1) & 7)]
        if len(self._parts) > MAX_SEGMENTED:
            raise BadResponse(f"more than {MAX_SEGMENTED} bytes")
        if cmd & 0x01:  # last segment
            if self._size is not None and len(self._parts) != self._size:
                raise BadResponse(f"{len(self._parts)} bytes received, {self._size} indicated")
            self.data, self.sized = bytes(self._parts), self._size is not None
            return True
        self._toggle ^= _TOGGLE
        return bytes([_CCS_SEGMENT << 5 | self._toggle]) + bytes(7)


__all__ = ["ABORT_TIMED_OUT", "NO_RESPONSE", "BadResponse", "BusDown", "PortError", "SdoAbort",
           "SdoDiag", "SdoTimeout", "Upload", "UploadTransfer", "abort_frame", "request_frame"]
