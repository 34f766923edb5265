"""Simulated GX devices: the CAN part of /sys/class/net and udev's database, per model.

Written by hand from Venus's udev rules (meta-victronenergy, meta-venus/recipes-core/udev/files/
einstein/machine.rules for the Cerbo GX and Cerbo GX B1, k3/machine.rules for the Ekrano): the
kernel names, the VE_NAME and VE_CAN_CONFIG properties those rules set, and the interface type
280 (ARPHRD_CAN) that the rules match on. Other interfaces (Ethernet, loopback) are present too,
as on a real device, so that discovery has to filter.
"""

from __future__ import annotations

from pathlib import Path

# model -> [(interface, ifindex, type, udev properties)]
MODELS: dict[str, list[tuple[str, int, int, dict[str, str]]]] = {
    "cerbo-gx-mk1": [
        ("lo", 1, 772, {}),
        ("eth0", 2, 1, {}),
        ("can0", 3, 280, {"VE_NAME": "VE.Can port"}),
        ("can1", 4, 280, {"VE_NAME": "BMS-Can port", "VE_CAN_CONFIG": "bms-only"}),
        ("ll-wlan0", 5, 1, {}),
    ],
    "ekrano": [
        ("lo", 1, 772, {}),
        ("eth0", 2, 1, {}),
        ("vecan0", 3, 280, {"VE_NAME": "VE.Can port 1"}),
        ("vecan1", 4, 280, {"VE_NAME": "VE.Can port 2", "VE_CAN_CONFIG": "classic-and-hv"}),
    ],
}


def make_can_root(root: Path, model: str, usb_adapter: bool = False) -> Path:
    """Lay out ``root/sys/class/net`` and ``root/run/udev/data`` for ``model``."""
    entries = list(MODELS[model])
    if usb_adapter:  # a candleLight (gs_usb) adapter: a CAN interface without Venus names
        entries.append(("can9", 9, 280, {"ID_VENDOR_ID": "1d50"}))
    for iface, index, kind, props in entries:
        d = root / "sys/class/net" / iface
        d.mkdir(parents=True, exist_ok=True)
        (d / "type").write_text(f"{kind}\n")
        (d / "ifindex").write_text(f"{index}\n")
        (d / "operstate").write_text("up\n" if kind == 280 else "unknown\n")
        udev = root / "run/udev/data"
        udev.mkdir(parents=True, exist_ok=True)
        lines = [f"I:{index}000000", "G:systemd"] + [f"E:{k}={v}" for k, v in props.items()]
        (udev / f"n{index}").write_text("\n".join(lines) + "\n")
    return root
