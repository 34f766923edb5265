"""canopen's SDO client, made to match every answer to the request it belongs to.

canopen (:class:`canopen.sdo.SdoClient`) stays the protocol library: it builds the requests,
runs the expedited and segmented upload state machine and decodes the answers. What it does not
do is tell an answer to *this* request from an answer to an earlier one: it empties its queue
only before it sends, takes the first frame that arrives and raises on a multiplexer that is not
the request's. On a real bus a node that is slow (an answer after the client gave up) or that
repeats its previous answer then puts the client out of step: the right answer lands in the next
request, an abort is filed under the wrong object (docs/superb.md, "SDO transactions").

:class:`MatchingSdoClient` overrides the one place where a request meets its answer
(:meth:`request_response`):

* frames queued before the request is sent are dropped (they answer nothing still pending);
* an initiate-upload answer or an abort counts only if its multiplexer (index, sub-index) is the
  pending request's (CiA 301 §7.2.4.3: both carry it in bytes 1-3); a segment answer only if its
  command specifier and toggle bit are the ones expected;
* anything else — another object's answer, a repeated answer, a frame shorter than the 8 bytes
  every SDO frame has — is discarded and counted in :class:`SdoDiag`, and the client keeps
  waiting for the right answer until its timeout;
* a timeout sends the abort for *this* transfer (code 0x05040000, with its multiplexer) and
  raises, so a late answer finds no request waiting for it and is discarded by the next one.

:class:`SdoNode` is a :class:`canopen.RemoteNode` whose SDO channel is such a client. Nothing here
writes to a node: the driver only calls uploads.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from dataclasses import dataclass, field

import canopen
from canopen.sdo import SdoClient
from canopen.sdo.exceptions import SdoAbortedError, SdoCommunicationError

#: client/server command specifiers (CiA 301): the top 3 bits of byte 0
_CCS_UPLOAD, _CCS_SEGMENT, _CS_ABORT = 2, 3, 4
_SCS_SEGMENT, _SCS_UPLOAD = 0, 2
_TOGGLE = 0x10
#: CiA 301 abort code "SDO protocol timed out", sent when our own upload gets no answer
ABORT_TIMED_OUT = 0x05040000

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


class MatchingSdoClient(SdoClient):  # type: ignore[misc]
    """An :class:`~canopen.sdo.SdoClient` that only accepts the answer to its pending request."""

    def __init__(self, rx_cobid: int, tx_cobid: int, od: canopen.ObjectDictionary,
                 diag: SdoDiag | None = None) -> None:
        super().__init__(rx_cobid, tx_cobid, od)
        self.diag = diag if diag is not None else SdoDiag()
        self._mux: tuple[int, int] | None = None  #: (index, sub-index) of the open transfer

    # -- the one place a request meets its answer ----------------------------------------------
    def request_response(self, sdo_request: bytes | bytearray) -> bytes:
        request = bytes(sdo_request)
        ccs = request[0] >> 5
        if ccs == _CCS_UPLOAD:
            self._mux = (int.from_bytes(request[1:3], "little"), request[3])
        self._flush()
        self.send_request(sdo_request)
        deadline = time.monotonic() + float(self.RESPONSE_TIMEOUT)
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise queue.Empty
                response = self.responses.get(block=True, timeout=left)
            except queue.Empty:
                self._abort_pending(ABORT_TIMED_OUT)
                raise SdoCommunicationError(NO_RESPONSE) from None
            why = self._mismatch(request, response)
            if why is None:
                if response[0] >> 5 == _CS_ABORT:
                    raise SdoAbortedError(int.from_bytes(response[4:8], "little"))
                return response
            self._count(why, response)

    def read_response(self) -> bytes:  # pragma: no cover - request_response covers every use
        raise NotImplementedError("MatchingSdoClient answers only through request_response")

    def _mismatch(self, request: bytes, response: bytes) -> str | None:
        """Why ``response`` does not answer ``request`` (None: it does)."""
        if len(response) < 8:
            return "malformed"
        cs = response[0] >> 5
        mux = (int.from_bytes(response[1:3], "little"), response[3])
        if cs == _CS_ABORT:
            return None if mux == self._mux else "abort for another object"
        ccs = request[0] >> 5
        if ccs == _CCS_UPLOAD:
            if cs != _SCS_UPLOAD:
                return "not an upload answer"
            return None if mux == self._mux else "answer for another object"
        if ccs == _CCS_SEGMENT:
            if cs != _SCS_SEGMENT:
                return "not a segment answer"
            return None if response[0] & _TOGGLE == request[0] & _TOGGLE else "toggle bit repeated"
        return None  # nothing else is ever sent by this driver

    def _count(self, why: str, response: bytes) -> None:
        with self.diag.lock:
            if why == "malformed":
                self.diag.malformed += 1
            else:
                self.diag.discarded += 1
            self.diag.last = f"{why}: {response.hex()}"

    def _flush(self) -> None:
        while True:
            try:
                stale = self.responses.get_nowait()
            except queue.Empty:
                return
            with self.diag.lock:
                self.diag.flushed += 1
                self.diag.last = f"no request pending: {bytes(stale).hex()}"

    def _abort_pending(self, code: int) -> None:
        request = bytearray(8)
        index, sub = self._mux or (0, 0)
        struct.pack_into("<BHBL", request, 0, _CS_ABORT << 5, index, sub, code)
        try:
            self.send_request(request)
        except Exception:  # noqa: BLE001 - the caller must hear of the timeout, not this
            pass

    def abort(self, abort_code: int = 0x08000000) -> None:
        """Abort the open transfer (with its multiplexer, which canopen leaves out)."""
        self._abort_pending(abort_code)

    # -- upload that tells whether the node indicated the size --------------------------------
    def upload_sized(self, index: int, subindex: int) -> tuple[bytes, bool]:
        """Upload one object: (data, whether the node indicated the size).

        An expedited answer without the size indicated carries 4 bytes of which only the
        object's own size is data (CiA 301): the caller decodes it by the object's declared type.
        Raises :class:`SdoAbortedError` or :class:`SdoCommunicationError`.
        """
        with self.open(index, subindex, buffering=0) as fp:
            size = fp.size
            data = bytes(fp.read())
        if size is not None and len(data) != size:
            raise SdoCommunicationError(f"{len(data)} bytes received, {size} indicated")
        return data, size is not None


class SdoNode(canopen.RemoteNode):  # type: ignore[misc]
    """A remote node whose SDO channel is a :class:`MatchingSdoClient` (empty dictionary: the
    driver's object table decides what an answer means, never canopen's dictionary)."""

    def __init__(self, node_id: int, diag: SdoDiag) -> None:
        self._diag = diag
        super().__init__(node_id, canopen.ObjectDictionary())

    def add_sdo(self, rx_cobid: int, tx_cobid: int) -> MatchingSdoClient:
        client = MatchingSdoClient(rx_cobid, tx_cobid, self.object_dictionary, self._diag)
        self.sdo_channels.append(client)
        if self.has_network():
            self.network.subscribe(client.tx_cobid, client.on_response)
        return client


__all__ = ["ABORT_TIMED_OUT", "MatchingSdoClient", "SdoAbortedError", "SdoDiag", "SdoNode"]
