"""CanBridge: CAN-bus energy hardware as native Victron Venus OS devices."""

__version__ = "0.1.0"
