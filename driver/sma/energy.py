"""Vebus energy counters from the Sunny Island's power readings (pure, plus a state file).

Per phase, with ``p_in`` the power drawn from the active AC input (+ = import; 0x300),
``p_inv`` the inverter's AC power (+ = inverting, battery discharging; - = charging; 0x301)
and the AC output (loads) ``p_out = p_in + p_inv``, each instant is split into the flows of
PROTOCOLS.md §3 (AC-in 1 = grid, AC-in 2 = generator):

========================  ==================  =================================================
import (p_in >= 0)        inverting           AcInToAcOut += p_in, InverterToAcOut += p_inv
import                    charging, out >= 0  AcInToAcOut += p_out, AcInToInverter += -p_inv
import                    charging, out < 0   AcInToInverter += p_in, OutToInverter += -p_out
export (p_in < 0)         inverting, out >= 0 InverterToAcIn += -p_in, InverterToAcOut += p_out
export                    inverting, out < 0  InverterToAcIn += p_inv, AcOutToAcIn += -p_out
export                    charging            AcOutToAcIn += -p_in, OutToInverter += -p_inv
no input                  inverting           InverterToAcOut += p_inv
no input                  charging            OutToInverter += -p_inv (AC-coupled PV on AC-out)
========================  ==================  =================================================

Every flow is >= 0, so the counters never decrease. Energy = power x time with the exact factor
1 kWh = 3,600,000 W s.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger("canbridge.sma")

FLOWS = ("AcIn1ToAcOut", "AcIn1ToInverter", "AcIn2ToAcOut", "AcIn2ToInverter",
         "AcOutToAcIn1", "AcOutToAcIn2", "InverterToAcIn1", "InverterToAcIn2",
         "InverterToAcOut", "OutToInverter")
WS_PER_KWH = 3_600_000.0
#: a gap longer than this between power readings is not integrated (no made-up energy)
MAX_GAP_S = 5.0


def split(p_in: float, p_inv: float, active_input: int | None) -> dict[str, float]:
    """Power flows (W, all >= 0) of one phase; ``active_input`` 1, 2 or None (disconnected)."""
    out: dict[str, float] = {}
    if active_input not in (1, 2):
        if p_inv >= 0:
            out["InverterToAcOut"] = p_inv
        else:
            out["OutToInverter"] = -p_inv
        return out
    n = active_input
    p_out = p_in + p_inv
    if p_in >= 0:
        if p_inv >= 0:
            out[f"AcIn{n}ToAcOut"] = p_in
            out["InverterToAcOut"] = p_inv
        elif p_out >= 0:
            out[f"AcIn{n}ToAcOut"] = p_out
            out[f"AcIn{n}ToInverter"] = -p_inv
        else:
            out[f"AcIn{n}ToInverter"] = p_in
            out["OutToInverter"] = -p_out
    elif p_inv >= 0:
        if p_out >= 0:
            out[f"InverterToAcIn{n}"] = -p_in
            out["InverterToAcOut"] = p_out
        else:
            out[f"InverterToAcIn{n}"] = p_inv
            out[f"AcOutToAcIn{n}"] = -p_out
    else:
        out[f"AcOutToAcIn{n}"] = -p_in
        out["OutToInverter"] = -p_inv
    return {k: v for k, v in out.items() if v > 0}


class EnergyCounters:
    """Cumulative kWh per flow; :meth:`add` integrates one interval of per-phase powers."""

    def __init__(self, initial: Mapping[str, float] | None = None) -> None:
        self.kwh: dict[str, float] = dict.fromkeys(FLOWS, 0.0)
        for k, v in (initial or {}).items():
            if k in self.kwh and isinstance(v, (int, float)) and v >= 0:
                self.kwh[k] = float(v)

    def add(self, phases: Iterable[tuple[float, float]], active_input: int | None,
            seconds: float) -> None:
        """Integrate ``seconds`` of per-phase ``(p_in, p_inv)`` watts."""
        if seconds <= 0 or seconds > MAX_GAP_S:
            return
        for p_in, p_inv in phases:
            for flow, watts in split(p_in, p_inv, active_input).items():
                self.kwh[flow] += watts * seconds / WS_PER_KWH


def load(path: Path) -> dict[str, float]:
    """Counters saved by :func:`save`; empty (logged) when the file is missing or broken."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        log.info("no saved energy counters at %s; starting from 0", path)
        return {}
    except (OSError, ValueError) as exc:
        log.error("cannot read energy counters %s (%s); starting from 0", path, exc)
        return {}
    counters = data.get("kwh") if isinstance(data, dict) else None
    if not isinstance(counters, dict):
        log.error("energy counter file %s has no counters; starting from 0", path)
        return {}
    return {k: float(v) for k, v in counters.items()
            if k in FLOWS and isinstance(v, (int, float)) and v >= 0}


def save(path: Path, kwh: Mapping[str, float]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "kwh": dict(kwh)}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
