"""A small reader for the subset of the DBC format that ``sma_si.dbc`` uses.

The DBC file stays the single description of the Sunny Island frames (users decode their own
captures with it in cantools, SavvyCAN, ...). ``dbus-sma`` reads it with this module instead of
cantools: cantools and its dependencies add about 3 MB to a process that must stay small on a
GX, and the bridge needs only little-endian integer signals without offset or multiplexing. Any
other construct is refused with :class:`DbcError` naming the line, so the file cannot silently
grow beyond what this reader understands. ``tests/sma/test_dbc.py`` checks every message against
cantools' reading of the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


class DbcError(ValueError):
    """The DBC file uses something this reader does not support, or is malformed."""


@dataclass(frozen=True)
class Signal:
    """One signal: little-endian integer, ``physical = raw * scale``."""

    name: str
    start: int
    length: int
    is_signed: bool
    scale: float
    unit: str
    choices: dict[int, str] = field(default_factory=dict, compare=False)

    def extract(self, value: int) -> int:
        """The raw value of this signal in a frame's data as a little-endian integer."""
        raw = (value >> self.start) & ((1 << self.length) - 1)
        if self.is_signed and raw & (1 << (self.length - 1)):
            raw -= 1 << self.length
        return raw

    def insert(self, raw: int) -> int:
        """``raw`` placed at this signal's bits (two's complement for signed signals)."""
        lo = -(1 << (self.length - 1)) if self.is_signed else 0
        hi = (1 << (self.length - 1)) - 1 if self.is_signed else (1 << self.length) - 1
        if not lo <= raw <= hi:
            raise ValueError(f"{self.name}: raw value {raw} outside {lo}..{hi}")
        return (raw & ((1 << self.length) - 1)) << self.start


@dataclass(frozen=True)
class Message:
    """One frame layout."""

    frame_id: int
    name: str
    length: int
    sender: str
    signals: tuple[Signal, ...]

    def encode(self, raws: dict[str, int]) -> bytes:
        """The data bytes for raw signal values (missing signals are 0)."""
        value = 0
        for sig in self.signals:
            value |= sig.insert(int(raws.get(sig.name, 0)))
        return value.to_bytes(self.length, "little")

    def decode(self, data: bytes) -> dict[str, int]:
        """Raw signal values of ``data`` (which must have this message's length)."""
        if len(data) != self.length:
            raise ValueError(f"{self.name}: {len(data)} bytes, expected {self.length}")
        value = int.from_bytes(data, "little")
        return {sig.name: sig.extract(value) for sig in self.signals}


_BO = re.compile(r"^BO_\s+(\d+)\s+(\w+)\s*:\s*(\d+)\s+(\w+)\s*$")
_SG = re.compile(
    r"^SG_\s+(\w+)\s*:\s*(\d+)\|(\d+)@([01])([+-])\s*\(([^,]+),([^)]+)\)\s*"
    r"\[[^\]]*\]\s*\"([^\"]*)\"\s*(.*)$")
_VAL = re.compile(r"^VAL_\s+(\d+)\s+(\w+)\s+(.*);\s*$")
_CHOICE = re.compile(r"(-?\d+)\s+\"([^\"]*)\"")
_IGNORED = ("VERSION", "NS_", "BS_", "BU_", "CM_", "BA_", "BA_DEF_", "BA_DEF_DEF_", "VAL_TABLE_")


def parse(text: str) -> dict[int, Message]:
    """Messages by frame ID from DBC text."""
    messages: dict[int, tuple[str, int, str, list[Signal]]] = {}
    choices: dict[tuple[int, str], dict[int, str]] = {}
    current: int | None = None
    in_ns = False
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            current = None
            in_ns = False
            continue
        if in_ns and raw_line[:1].isspace() and not line.startswith("SG_"):
            continue  # the NS_ block lists keywords, one per indented line
        if m := _BO.match(line):
            current = int(m.group(1))
            if current & 0x80000000:
                raise DbcError(f"line {lineno}: extended frame IDs are not supported")
            messages[current] = (m.group(2), int(m.group(3)), m.group(4), [])
            continue
        if line.startswith("SG_"):
            m = _SG.match(line)
            if m is None or current is None:
                raise DbcError(f"line {lineno}: cannot read signal: {line}")
            name, start, length, order, sign, scale, offset, unit, _ = m.groups()
            if order != "1":
                raise DbcError(f"line {lineno}: {name}: only little-endian signals")
            if float(offset) != 0:
                raise DbcError(f"line {lineno}: {name}: offsets are not supported")
            if re.match(r"^\w+\s+[mM]", line[3:]):
                raise DbcError(f"line {lineno}: {name}: multiplexing is not supported")
            messages[current][3].append(Signal(name, int(start), int(length), sign == "-",
                                               float(scale), unit))
            continue
        if m := _VAL.match(line):
            table = {int(v): t for v, t in _CHOICE.findall(m.group(3))}
            choices[(int(m.group(1)), m.group(2))] = table
            continue
        if line.startswith("NS_"):
            in_ns = True
            continue
        if line.split(maxsplit=1)[0].rstrip(":") in _IGNORED or line.startswith("CM_"):
            continue
        raise DbcError(f"line {lineno}: unsupported DBC statement: {line[:40]}")
    out = {}
    for fid, (name, length, sender, sigs) in messages.items():
        with_choices = tuple(
            Signal(s.name, s.start, s.length, s.is_signed, s.scale, s.unit,
                   choices.get((fid, s.name), {})) for s in sigs)
        for s in with_choices:
            if s.start + s.length > 8 * length:
                raise DbcError(f"{name}.{s.name} does not fit in {length} bytes")
        out[fid] = Message(fid, name, length, sender, with_choices)
    for fid, sig in choices:
        if fid not in out or sig not in {s.name for s in out[fid].signals}:
            raise DbcError(f"value table for unknown signal {fid}/{sig}")
    return out


def load(path: Path | str) -> dict[int, Message]:
    """Read a DBC file."""
    return parse(Path(path).read_text(encoding="utf-8"))
