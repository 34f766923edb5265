"""The "Sunny Island inputs" section of docs/RELIABILITY.md.

``tests/sma/test_hostile.py``, ``tests/sma/test_field.py`` and
``tests/sma/test_sources_and_link.py`` record the faults they inject into a real ``dbus-sma``
(loopback CAN, private dbus-daemon, simulated Sunny Island and battery) with the measured
detection time into ``artifacts/faults/sma_inputs.json``; ``bench/reliability_report.py``
appends this section when that file exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "artifacts" / "faults" / "sma_inputs.json"

ORDER = ("nan_inf", "invalid_values", "frozen", "stage_exception", "build_failing",
         "poll_exception", "dc_solar", "own_vebus_source", "short_frame", "start_lost",
         "dvcc_expiry", "cluster_stale")

RUN = (".venv/bin/python -m pytest tests/sma/test_hostile.py tests/sma/test_field.py "
       "tests/sma/test_sources_and_link.py")


def section(path: Path = RESULTS) -> str:
    """Markdown for the recorded input faults ('' when nothing was recorded)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    out = ["## Sunny Island inputs (issues 11 and 13)\n",
           "Each row is a process test with real processes (dbus-sma, the simulated Sunny "
           "Island and battery, systemcalc stand-in) on the loopback bus, run with "
           f"`{RUN}`; detection is measured from the injection to the signal named "
           "(CAN frames on arrival, D-Bus values polled every 0.1 s).\n",
           "| fault | expected | detect (s) | measured by | note |", "|---|---|---|---|---|"]
    keys = [k for k in ORDER if k in data] + sorted(k for k in data if k not in ORDER)
    for k in keys:
        r = data[k]
        det = "—" if r.get("detect") is None else f"{r['detect']:.2f}"
        out.append(f"| {r['fault']} | {r['expected']} | {det} | {r['signal']} | "
                   f"{r.get('note', '')} |")
    stamp = max((r.get("at", "") for r in data.values()), default="")
    out.append(f"\nRecorded up to {stamp}.\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(section())
