"""Settings values and their ``settings.xml`` persistence, for the settings-service stand-in.

This module knows nothing about D-Bus. It holds the rules that the Venus settings service
applies to values (type conversion, ranges) and reads and writes the on-disk format Venus OS
uses in ``/data/conf/settings.xml``::

    <?xml version='1.0' encoding='UTF-8'?>
    <Settings version="19" unique-id="">
      <Fronius>
        <PortNumber type="i" default="80" silent="False">80</PortNumber>
      </Fronius>
      <Relay>
        <_1>
          <Function type="i" min="0" max="6" default="0" silent="False">2</Function>
        </_1>
      </Relay>
    </Settings>

The root element is the ``/Settings`` group; an element with a ``type`` attribute is a setting
(``i`` integer, ``f`` float, ``s`` string), any other element is a group. XML names cannot start
with a digit, so such path elements are stored with a leading underscore, which is dropped again
when the file is read. The file is replaced atomically (temporary file, fsync, rename, fsync of
the directory), so a power cut leaves either the old or the new file.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: The setting types and the Python type each converts to.
SETTING_TYPES: dict[str, type] = {"i": int, "f": float, "s": str}

#: Format version written into the root element. Victron's localsettings runs its file
#: migrations for older versions; this is the version its current release writes, so a file
#: written here is taken as up to date by it.
FORMAT_VERSION = "19"

ROOT_TAG = "Settings"
ROOT_PATH = "/Settings"

Value = int | float | str


class SettingsFileError(Exception):
    """The settings file exists but cannot be read as a settings file."""


def convert(kind: str, raw: object) -> Value | None:
    """Convert ``raw`` to the Python type of setting type ``kind``; ``None`` if impossible.

    The conversion is Python's own constructor, as on the GX: ``int(56.7)`` truncates towards
    zero, ``int("56")`` parses, ``int("56.7")`` fails, ``int(True)`` is 1, ``str(5)`` is ``"5"``.
    """
    if raw is None:
        return None
    target = SETTING_TYPES.get(kind)
    if target is None:
        return None
    try:
        return target(raw)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError):
        return None


def parse_bool(raw: str | None) -> bool:
    """Read the ``silent`` attribute: ``1``/``0`` or ``True``/``False`` (any case)."""
    if raw is None:
        return False
    text = raw.strip()
    try:
        return bool(int(text))
    except ValueError:
        return text.lower() == "true"


@dataclass
class Setting:
    """One setting: its type, current value, default and optional range.

    ``minimum``/``maximum`` of ``None`` mean "no limit" on that side.
    """

    kind: str
    value: Value
    default: Value | None = None
    minimum: Value | None = None
    maximum: Value | None = None
    silent: bool = False

    def accepts(self, value: Value) -> bool:
        """True when ``value`` (already converted to this setting's type) is within range."""
        if self.minimum is not None and value < self.minimum:  # type: ignore[operator]
            return False
        return not (self.maximum is not None and value > self.maximum)  # type: ignore[operator]

    def same_attributes(self, other: Setting) -> bool:
        """True when type, default, range and silent flag all equal those of ``other``."""
        return (self.kind, self.default, self.minimum, self.maximum, self.silent) == (
            other.kind,
            other.default,
            other.minimum,
            other.maximum,
            other.silent,
        )


def xml_tag(name: str) -> str:
    """The XML element name for a path element (digits cannot start an XML name)."""
    return "_" + name if name[:1].isdigit() else name


def path_name(tag: str) -> str:
    """The path element for an XML element name (drops the escaping underscore)."""
    return tag[1:] if tag.startswith("_") else tag


def _setting_from_element(path: str, element: ET.Element) -> Setting | None:
    kind = element.get("type", "")
    if kind not in SETTING_TYPES:
        logger.warning("%s: unknown setting type %r, setting ignored", path, kind)
        return None
    default = convert(kind, element.get("default"))
    value = convert(kind, element.text or "")
    if value is None:
        if default is None:
            logger.warning("%s: unreadable value %r and no default, ignored", path, element.text)
            return None
        logger.warning("%s: unreadable value %r, using the default", path, element.text)
        value = default
    return Setting(
        kind=kind,
        value=value,
        default=default,
        minimum=convert(kind, element.get("min")),
        maximum=convert(kind, element.get("max")),
        silent=parse_bool(element.get("silent")),
    )


def _walk(element: ET.Element, path: str, out: dict[str, Setting]) -> None:
    for child in element:
        if not isinstance(child.tag, str):  # comments and processing instructions
            continue
        child_path = f"{path}/{path_name(child.tag)}"
        if child.get("type") is not None:
            setting = _setting_from_element(child_path, child)
            if setting is not None:
                out[child_path] = setting
        else:
            _walk(child, child_path, out)


def parse_settings(data: bytes) -> dict[str, Setting]:
    """Parse the bytes of a settings file into ``{absolute path: Setting}``.

    Raises :class:`SettingsFileError` when the data is not well-formed XML.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SettingsFileError(str(exc)) from exc
    if root.tag != ROOT_TAG:
        raise SettingsFileError(f"root element is <{root.tag}>, expected <{ROOT_TAG}>")
    out: dict[str, Setting] = {}
    _walk(root, ROOT_PATH, out)
    return out


def load_settings(file: Path) -> dict[str, Setting]:
    """Read a settings file; see :func:`parse_settings`. ``OSError`` if it cannot be read."""
    return parse_settings(file.read_bytes())


def build_tree(settings: Iterable[tuple[str, Setting]], unique_id: str = "") -> ET.ElementTree:
    """Build the XML tree for ``(path, setting)`` pairs; paths must start with ``/Settings/``."""
    root = ET.Element(ROOT_TAG, {"version": FORMAT_VERSION, "unique-id": unique_id})
    for path, setting in settings:
        parts = path.split("/")[2:]  # drop '' and 'Settings'
        node = root
        for part in parts[:-1]:
            tag = xml_tag(part)
            found = node.find(tag)
            if found is None or found.get("type") is not None:
                found = ET.SubElement(node, tag)
            node = found
        attrs = {"type": setting.kind}
        if setting.minimum is not None:
            attrs["min"] = str(setting.minimum)
        if setting.maximum is not None:
            attrs["max"] = str(setting.maximum)
        if setting.default is not None:
            attrs["default"] = str(setting.default)
        attrs["silent"] = str(setting.silent)
        leaf = ET.SubElement(node, xml_tag(parts[-1]), attrs)
        leaf.text = str(setting.value)

    def sort(element: ET.Element) -> None:
        element[:] = sorted(element, key=lambda e: str(e.tag))
        for child in element:
            sort(child)

    sort(root)
    ET.indent(root, space="  ")
    return ET.ElementTree(root)


def write_atomically(file: Path, data: bytes) -> None:
    """Replace ``file`` with ``data``: write a temporary file, fsync, rename, fsync the dir."""
    tmp = file.with_name(file.name + ".new")
    with open(tmp, "wb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, file)
    dir_fd = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_settings(file: Path, settings: Iterable[tuple[str, Setting]]) -> None:
    """Write ``(path, setting)`` pairs to ``file`` atomically, in the Venus format."""
    root = build_tree(settings).getroot()
    assert root is not None
    body = ET.tostring(root, encoding="unicode")
    data = ("<?xml version='1.0' encoding='UTF-8'?>\n" + body + "\n").encode("utf-8")
    write_atomically(file, data)
