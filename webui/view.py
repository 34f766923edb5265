"""Presenting schema settings: formatted values, input attributes, JSON descriptions."""

from __future__ import annotations

from typing import Any

from driver.schema import Setting


def fmt(setting: Setting, value: Any) -> str:
    """A value as the text an input shows (``""`` for unknown)."""
    if value is None:
        return ""
    if setting.type == "f":
        try:
            return f"{float(value):.{setting.decimals if setting.decimals is not None else 2}f}"
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def step(setting: Setting) -> str:
    if setting.type == "i":
        return "1"
    if setting.step is not None:
        return f"{setting.step:g}"
    return "any"


def option_label(setting: Setting, value: Any) -> str:
    for o in setting.options:
        if o.value == value:
            return o.label
    return fmt(setting, value)


def default_text(setting: Setting) -> str:
    """The default as shown next to a setting ("" for an empty text default)."""
    if setting.widget == "switch":
        return "on" if setting.default else "off"
    if setting.options:
        return option_label(setting, setting.default)
    text = fmt(setting, setting.default)
    return f"{text} {setting.unit}".strip() if text else "(empty)"


def describe(setting: Setting, value: Any) -> dict[str, Any]:
    """A setting and its current value as JSON (``GET /api/settings/<key>``)."""
    out: dict[str, Any] = {
        "key": setting.key, "path": setting.path, "type": setting.type,
        "value": value, "default": setting.dbus_default(), "label": setting.label,
        "help": setting.help, "group": setting.group, "widget": setting.widget,
    }
    for attr in ("min", "max", "step", "decimals", "maxlength"):
        v = getattr(setting, attr)
        if v is not None:
            out[attr] = v
    if setting.unit:
        out["unit"] = setting.unit
    if setting.options:
        out["options"] = [{"value": o.value, "label": o.label} for o in setting.options]
    if setting.reconnect:
        out["reconnect"] = True
    return out
