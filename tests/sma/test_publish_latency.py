"""A limit change shows on the vebus service at once, not with the Sunny Island's next frame
(issue 8: setting change → D-Bus path latency)."""

from __future__ import annotations

import time

from tests.sma.conftest import SmaSystem


def test_setting_change_reaches_canbridge_cvl_before_the_next_si_frame(sma: SmaSystem) -> None:
    sma.start_si("--period", "3")  # Sunny Island frames only every 3 s
    sma.start_battery()
    sma.start_bridge()
    sma.wait_vebus("/CanBridge/Ladder", lambda v: v == "normal", 15)
    for k, target in enumerate((56.0, 56.4, 56.2)):
        time.sleep(0.7 * k + 0.3)  # at different moments of the Sunny Island's period
        t0 = time.monotonic()
        sma.set_setting("AbsorptionVoltage", target)
        deadline = t0 + 5
        while time.monotonic() < deadline and sma.vebus("/CanBridge/Cvl") != target:
            time.sleep(0.01)
        assert sma.vebus("/CanBridge/Cvl") == target
        assert time.monotonic() - t0 < 0.5, f"trial {k}: {time.monotonic() - t0:.2f} s"
