"""``dbus-sma``: the SMA Sunny Island bridge (external BMS and vebus service)."""

from __future__ import annotations

import sys

from driver import app as appmod


def main(argv: list[str] | None = None) -> int:
    args = appmod.common_args(__doc__ or "dbus-sma").parse_args(argv)
    holder: dict[str, appmod.App] = {}

    def changed(path: str, old: object, new: object) -> None:
        holder["app"].log.info("setting %s changed: %r -> %r", path, old, new)

    app = appmod.start("dbus-sma", args, ("Sma/",), on_change=changed)
    if app is not None:
        holder["app"] = app
    return appmod.run(app)


if __name__ == "__main__":
    sys.exit(main())
