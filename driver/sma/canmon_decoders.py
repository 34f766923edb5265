"""The Sunny Island link's frames for the CAN monitor (``driver/canmon.py`` plugin)."""

from __future__ import annotations

from typing import Any

import can

from driver.sma import frames


def decode_frame(can_id: int, data: bytes) -> str | None:
    """Monitor decoder signature ``(can_id, data) -> str | None``."""
    return frames.decode(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))


def register(registry: Any) -> None:
    """Register 0x300-0x30A (Sunny Island), 0x351-0x35F (BMS) and 0x00F (quick stop)."""
    registry.register(0x300, 0x30A, "sma", decode_frame)
    registry.register(0x351, 0x35F, "sma", decode_frame)
    registry.register(0x00F, 0x00F, "sma", decode_frame)
