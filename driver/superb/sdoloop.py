"""One thread per CAN interface that runs every SDO transfer on it (docs/superb.md, "Threads").

Work comes as *tasks*: generators that yield an :class:`~driver.superb.sdo.Upload` (and get back
``(data, sized)``, or the read's :class:`~driver.superb.sdo.PortError` thrown in) or a number
of seconds to sleep (woken early by :meth:`SdoLoop.wake`). A battery's poller is one long task;
a blocking read from another thread (the scan) is a one-upload task waited for with
:meth:`SdoLoop.call`.

Transfers of different nodes run side by side: a request goes out to each node as soon as its
task asks, and each transfer has its own deadline, so a node that does not answer delays only
its own task, by its own timeouts. One node has at most one transfer open (its SDO channel has
no transaction id); other tasks asking the same node wait their turn in order.

Answers reach the loop from the CAN receive thread through one queue (:meth:`SdoLoop.frame`). An
answer with no transfer of its node open is counted as flushed; one that does not answer the
open transfer is discarded and counted (:mod:`driver.superb.sdo`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from driver.superb.sdo import (
    NO_RESPONSE,
    BadResponse,
    BusDown,
    PortError,
    SdoDiag,
    SdoTimeout,
    Upload,
    UploadTransfer,
)

log = logging.getLogger("canbridge.superb.sdo")

#: the longest SDO timeout and sleep a task may ask for (s); beyond, or NaN, is a bug upstream
MAX_TIMEOUT = 60.0
MAX_SLEEP = 3600.0

#: a task: yields Upload (gets (data, sized)) or seconds to sleep (gets None); returns a result
Task = Generator[Any, Any, Any]


class TaskHandle:
    """A task of the loop (for :meth:`SdoLoop.wake` and :meth:`SdoLoop.remove`)."""

    __slots__ = (
        "deadline",
        "done",
        "error",
        "gen",
        "node_id",
        "removed",
        "result",
        "transfer",
        "upload",
        "wake_at",
        "woken",
    )

    def __init__(self, node_id: int, gen: Task, done: threading.Event | None) -> None:
        self.node_id = node_id
        self.gen = gen
        self.upload: Upload | None = None  #: the upload it waits for (its own or its turn)
        self.transfer: UploadTransfer | None = None  #: its open transfer
        self.deadline = 0.0  #: of the open transfer's current frame
        self.wake_at: float | None = None  #: sleeping until
        self.woken = False
        self.done = done  #: set when the task ends (blocking calls only)
        self.result: Any = None
        self.error: BaseException | None = None
        self.removed = False


class SdoLoop:
    """The SDO transfers of one CAN interface, in one thread.

    ``send(node_id, frame)`` sends a request frame to 0x600+node (raising
    :class:`~driver.superb.sdo.BusDown`); ``diag(node_id)`` gives the node's :class:`SdoDiag`
    and ``known(node_id)`` whether it has one (unasked nodes are not counted).
    """

    def __init__(self, name: str, send: Callable[[int, bytes], None],
                 diag: Callable[[int], SdoDiag], known: Callable[[int], bool]) -> None:
        self._send = send
        self._diag = diag
        self._known = known
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._tasks: list[TaskHandle] = []
        self._busy: dict[int, TaskHandle] = {}  #: node -> the task whose transfer is open
        self._waiting: dict[int, deque[TaskHandle]] = {}  #: node -> tasks waiting their turn
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sdo-{name}")
        self._started = False
        self._stopped = False
        #: fault injection for the process tests (None in operation)
        self.inject: Callable[[], bool] | None = None

    # -- other threads --------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        self._inbox.put(("stop",))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    @property
    def ended(self) -> bool:
        """The loop was started and its thread is gone (stopped, or failed: logged)."""
        return self._started and not self._thread.is_alive()

    def frame(self, node_id: int, data: bytes) -> None:
        """An SDO answer (0x580+node) heard on the bus (receive thread)."""
        self._inbox.put(("frame", node_id, data))

    def add(self, node_id: int, gen: Task) -> TaskHandle:
        """Run ``gen`` for ``node_id`` from now on."""
        handle = TaskHandle(node_id, gen, None)
        self._inbox.put(("add", handle))
        return handle

    def wake(self, handle: TaskHandle) -> None:
        """End the task's current sleep now, or its next one at once."""
        self._inbox.put(("wake", handle))

    def remove(self, handle: TaskHandle, wait: bool = True) -> None:
        """Stop a task (closed at its current step); with ``wait``, return once it is."""
        done = threading.Event() if wait and threading.current_thread() is not self._thread \
            else None
        self._inbox.put(("remove", handle, done))
        if done is not None and self._thread.is_alive():
            done.wait(5)

    def call(self, node_id: int, gen: Task) -> Any:
        """Run ``gen`` in the loop and wait for its result (or its exception)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("SdoLoop.call from the loop's own thread")
        if not self.running:
            raise BusDown("the SDO loop is not running")
        handle = TaskHandle(node_id, gen, threading.Event())
        self._inbox.put(("add", handle))
        assert handle.done is not None
        while not handle.done.wait(0.5):
            if not self.running:
                raise BusDown("the SDO loop stopped")
        if handle.error is not None:
            raise handle.error
        return handle.result

    # -- the loop thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                item = self._next_item()
                while item is not None:
                    if item[0] == "stop":
                        return
                    self._handle(item)
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        item = None
                self._expire(time.monotonic())
                if self.inject is not None and self.inject():
                    raise RuntimeError("injected into the SDO loop")
        except Exception:
            log.exception("the SDO loop of %s failed; no SDO transfers from now on",
                          self._thread.name)
            raise
        finally:
            self._stopped = True
            for t in list(self._tasks):
                self._end(t, None, BusDown("the SDO loop stopped"), close=True)

    def _next_item(self) -> tuple[Any, ...] | None:
        now = time.monotonic()
        due = None
        for t in self._tasks:
            at = t.deadline if t.transfer is not None else t.wake_at
            if at is not None and (due is None or at < due):
                due = at
        try:
            if due is None:
                return self._inbox.get()
            return self._inbox.get(timeout=max(0.0, due - now)) if due > now \
                else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "frame":
            self._on_frame(item[1], item[2])
        elif kind == "add":
            handle: TaskHandle = item[1]
            self._tasks.append(handle)
            self._step(handle, None, None)
        elif kind == "wake":
            handle = item[1]
            if handle.removed:
                return
            if handle.wake_at is not None:
                handle.wake_at = None
                self._step(handle, None, None)
            else:
                handle.woken = True
        elif kind == "remove":
            handle, done = item[1], item[2]
            if not handle.removed and handle in self._tasks:
                self._end(handle, None, None, close=True)
            handle.removed = True
            if done is not None:
                done.set()

    def _expire(self, now: float) -> None:
        for t in list(self._tasks):
            if t.removed:
                continue
            if t.transfer is not None and now >= t.deadline:
                tr = t.transfer
                try:
                    self._send(t.node_id, tr.timeout_abort())
                except Exception:  # noqa: BLE001 - the task must hear of the timeout, not this
                    pass
                self._finish(t, None, SdoTimeout(NO_RESPONSE))
            elif t.wake_at is not None and now >= t.wake_at:
                t.wake_at = None
                self._step(t, None, None)

    def _on_frame(self, node_id: int, data: bytes) -> None:
        t = self._busy.get(node_id)
        if t is None or t.transfer is None:
            if self._known(node_id):
                self._diag(node_id).count("flushed", data)
            return
        tr = t.transfer
        why = tr.mismatch(data)
        if why is not None:
            self._diag(node_id).count(why, data)
            return
        try:
            out = tr.on_frame(data)
        except PortError as exc:  # an abort for this object, answers that make no upload
            self._finish(t, None, exc)
            return
        if out is True:
            self._finish(t, (tr.data, tr.sized), None)
            return
        assert isinstance(out, bytes)
        try:
            self._send(node_id, out)
        except Exception as exc:  # noqa: BLE001 - a failed send fails this read
            self._finish(t, None, self._as_port_error(exc))
            return
        t.deadline = time.monotonic() + t.upload.timeout if t.upload else 0.0

    def _as_port_error(self, exc: BaseException) -> BaseException:
        return exc if isinstance(exc, PortError) else BadResponse(f"{type(exc).__name__}: {exc}")

    def _finish(self, t: TaskHandle, value: Any, error: BaseException | None) -> None:
        """End ``t``'s transfer and give its node to the next task waiting for it."""
        t.transfer = None
        t.upload = None
        if self._busy.get(t.node_id) is t:
            del self._busy[t.node_id]
        self._next_turn(t.node_id)  # a task waiting for the node goes first: no starving
        self._step(t, value, error)

    def _next_turn(self, node_id: int) -> None:
        waiting = self._waiting.get(node_id)
        while waiting and node_id not in self._busy:
            nxt = waiting.popleft()
            if not nxt.removed and nxt.upload is not None:
                err = self._open(nxt, nxt.upload)
                if err is not None:
                    self._step(nxt, None, err)
        if waiting is not None and not waiting and self._waiting.get(node_id) is waiting:
            del self._waiting[node_id]

    def _open(self, t: TaskHandle, up: Upload) -> BaseException | None:
        """Send ``t``'s request, or queue it behind the node's open transfer; returns the
        error of a request that could not be sent (the read failed at once)."""
        if not 0.0 < up.timeout <= MAX_TIMEOUT:  # NaN too: a transfer that never times out
            t.upload = None
            return BadResponse(f"SDO timeout {up.timeout!r} s is not usable")
        t.upload = up
        if t.node_id in self._busy:
            self._waiting.setdefault(t.node_id, deque()).append(t)
            return None
        tr = UploadTransfer(up.index, up.subindex)
        try:
            self._send(t.node_id, tr.first())
        except Exception as exc:  # noqa: BLE001 - a failed send fails this read
            t.upload = None
            return self._as_port_error(exc)
        self._busy[t.node_id] = t
        t.transfer = tr
        t.deadline = time.monotonic() + up.timeout
        return None

    def _step(self, t: TaskHandle, value: Any, error: BaseException | None) -> None:
        """Resume ``t`` with a value or an exception and act on what it yields next."""
        while True:
            if t.removed:
                return
            try:
                out = t.gen.throw(error) if error is not None else t.gen.send(value)
            except StopIteration as stop:
                self._end(t, stop.value, None)
                return
            except Exception as exc:
                if t.done is None:
                    log.exception("SDO task of node %d failed", t.node_id)
                self._end(t, None, exc)
                return
            value, error = None, None
            if isinstance(out, Upload):
                error = self._open(t, out)
                if error is None:
                    return  # sent, or queued behind another task's transfer
                continue  # not sent: the task hears of it at once
            # a sleep (seconds)
            if t.woken:
                t.woken = False
                continue
            delay = float(out)
            if not delay <= MAX_SLEEP:  # NaN too: the task would never run again
                log.error("SDO task of node %d asked to sleep %r s; sleeping 1 s", t.node_id, out)
                delay = 1.0
            t.wake_at = time.monotonic() + max(0.0, delay)
            return

    def _end(self, t: TaskHandle, result: Any, error: BaseException | None,
             close: bool = False) -> None:
        if t in self._tasks:
            self._tasks.remove(t)
        t.removed = True
        if self._busy.get(t.node_id) is t:
            del self._busy[t.node_id]
            self._next_turn(t.node_id)
        waiting = self._waiting.get(t.node_id)
        if waiting is not None and t in waiting:
            waiting.remove(t)
        if close:
            try:
                t.gen.close()
            except Exception:
                log.exception("closing the SDO task of node %d", t.node_id)
        t.result, t.error = result, error
        if t.done is not None:
            if close and error is None:
                t.error = BusDown("the SDO loop stopped")
            t.done.set()


__all__ = ["SdoLoop", "Task", "TaskHandle"]
