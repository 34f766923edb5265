"""Logging: repeats are rate-limited, distinct events are not, the level setting applies."""

from __future__ import annotations

import logging

from driver.logsetup import RepeatFilter, set_level_from_setting


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("canbridge.x", level, __file__, 1, msg, args, None)


def test_repeats_are_suppressed_and_counted():
    clock = Clock()
    f = RepeatFilter(window=60, clock=clock)
    assert f.filter(_record("node %d not answering", 3))
    for _ in range(5):
        clock.t += 1
        assert not f.filter(_record("node %d not answering", 3))
    # A different node is a different event.
    assert f.filter(_record("node %d not answering", 4))
    clock.t += 60
    rec = _record("node %d not answering", 3)
    assert f.filter(rec)
    assert rec.getMessage() == "node 3 not answering (5 repeats suppressed)"


def test_debug_is_never_suppressed():
    f = RepeatFilter(window=60, clock=Clock())
    assert all(f.filter(_record("x", level=logging.DEBUG)) for _ in range(3))


def test_level_setting():
    root = logging.getLogger()
    old = root.level
    try:
        set_level_from_setting(0)
        assert root.level == logging.DEBUG
        set_level_from_setting(3)
        assert root.level == logging.ERROR
        set_level_from_setting("bogus")
        assert root.level == logging.ERROR
    finally:
        root.setLevel(old)
