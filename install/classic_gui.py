"""Installer helper: add CanBridge's menu entry to the classic gui (gui-v1), reversibly.

The classic gui has no plugin mechanism, so an entry in Settings means patching the stock
``PageSettings.qml`` (on the root file system: every firmware update reverts it, so the boot
script applies the patch again). The rules:

* the entry (``PageSettings.snippet``, an ``MbSubMenu``) is inserted between two marker lines as
  the last item of the page's ``VisibleItemModel``;
* the patch is made on a copy and is only written if removing the marked block from the copy
  gives back the file exactly (the reverse patch is verified before anything changes);
* the original is kept in the state directory (under /data), with the sha256 of the original and
  of the patched file;
* restoring happens only while the file is still the one CanBridge patched (it holds the
  CanBridge block): after a firmware update replaced it with a new stock file, that file is left
  alone. The block is removed by the reverse patch; when the block was damaged (a marker
  edited away), the saved original is written back instead;
* page files (``*.qml`` next to the snippet) are copied beside ``PageSettings.qml``; a stock file
  of the same name is never overwritten, and only files still identical to what was installed
  are removed.

Usage::

    classic_gui.py apply   --gui DIR --source DIR --state DIR
    classic_gui.py restore --gui DIR --state DIR
    classic_gui.py status  --gui DIR --state DIR

``apply`` and ``restore`` print ``changed`` or ``unchanged`` (the installer restarts the gui
after a change). Exit code 1 with a message when nothing could be done safely.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

TARGET = "PageSettings.qml"
SNIPPET = "PageSettings.snippet"
BEGIN = "// CanBridge begin: added by the CanBridge installer (install.sh --uninstall removes it)"
END = "// CanBridge end"
STATE_FILE = "state.json"
ORIGINAL = "PageSettings.qml.orig"
MODEL_RE = re.compile(r"^(\s*)model\s*:\s*(VisibleItemModel|VisualItemModel)\s*\{\s*$")


class PatchError(Exception):
    """The file cannot be patched or restored safely; the message says why."""


def sha256(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _write_atomic(path: Path, data: str) -> None:
    """Replace ``path`` by ``data`` (same directory, rename), keeping its mode."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _braces(line: str) -> int:
    """Net ``{`` minus ``}`` of a QML line, ignoring strings and // comments."""
    depth, quote, i = 0, "", 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif line.startswith("//", i):
            break
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return depth


def unpatch(text: str) -> str | None:
    """``text`` without the CanBridge block; None when the markers are not a proper pair."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if ln.strip() == BEGIN]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        return None
    return "".join(lines[: starts[0]] + lines[ends[0] + 1 :])


def patch(original: str, snippet: str) -> str:
    """``original`` with the snippet, between markers, as the model's last item."""
    if BEGIN in original or END in original:
        raise PatchError(f"{TARGET} already holds a CanBridge block")
    lines = original.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if MODEL_RE.match(ln)), None)
    if start is None:
        raise PatchError(f"no 'model: VisibleItemModel {{' line in {TARGET}")
    depth, close = 0, None
    for i in range(start, len(lines)):
        depth += _braces(lines[i])
        if depth == 0:
            close = i
            break
    if close is None or lines[close].strip() != "}":
        raise PatchError(f"cannot find the end of the model in {TARGET}")
    items = [ln for ln in lines[start + 1 : close] if ln.strip()]
    base = MODEL_RE.match(lines[start]).group(1)  # type: ignore[union-attr]
    indent = re.match(r"^(\s*)", items[0]).group(1) if items else base + "\t"  # type: ignore[union-attr]
    newline = "\r\n" if lines[start].endswith("\r\n") else "\n"
    body = [indent + ln if ln.strip() else "" for ln in snippet.strip("\n").splitlines()]
    block = [indent + BEGIN, *body, indent + END]
    patched = "".join(lines[:close]) + "".join(b + newline for b in block) + "".join(lines[close:])
    if unpatch(patched) != original:
        raise PatchError("the reverse patch does not give back the original; not patching")
    return patched


class ClassicGui:
    """The patch state of one gui directory."""

    def __init__(self, gui: Path, state: Path) -> None:
        self.gui = gui
        self.target = gui / TARGET
        self.state_dir = state

    def _state(self) -> dict[str, object]:
        f = self.state_dir / STATE_FILE
        if not f.is_file():
            return {}
        data: dict[str, object] = json.loads(f.read_text())
        return data

    def _save_state(self, state: dict[str, object]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state, indent=1, sort_keys=True) + "\n"
        f = self.state_dir / STATE_FILE
        if not f.is_file() or f.read_text() != text:
            _write_atomic(f, text)

    def apply(self, source: Path) -> bool:
        """Patch (or re-patch) the page and install the page files; True if anything changed."""
        if not self.target.is_file():
            raise PatchError(f"{self.target} not found (no classic gui on this GX?)")
        snippet_file = source / SNIPPET
        if not snippet_file.is_file():
            raise PatchError(f"{snippet_file} not found in the bundle")
        snippet = _read(snippet_file)
        current = _read(self.target)
        state = self._state()
        if BEGIN in current or END in current:
            base = unpatch(current)
            if base is None:
                raise PatchError(f"{self.target} has a damaged CanBridge block; not touching it")
        else:
            base = current
        patched = patch(base, snippet)
        pages = self._install_pages(source, state)
        changed = pages
        if patched != current:
            original_file = self.state_dir / ORIGINAL
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if not original_file.is_file() or _read(original_file) != base:
                _write_atomic(original_file, base)
            _write_atomic(self.target, patched)
            changed = True
        state.update({"original_sha256": sha256(base), "patched_sha256": sha256(patched)})
        self._save_state(state)
        return changed

    def _install_pages(self, source: Path, state: dict[str, object]) -> bool:
        installed: dict[str, str] = dict(state.get("pages", {}))  # type: ignore[call-overload]
        changed = False
        for page in sorted(source.glob("*.qml")):
            dest = self.gui / page.name
            data = _read(page)
            if dest.exists():
                have = _read(dest)
                if have == data:
                    installed[page.name] = sha256(data)
                    continue
                if installed.get(page.name) != sha256(have):
                    raise PatchError(f"{dest} exists and is not CanBridge's; not overwriting it")
            _write_atomic(dest, data)
            installed[page.name] = sha256(data)
            changed = True
        state["pages"] = installed
        return changed

    def restore(self) -> tuple[bool, list[str]]:
        """Undo :meth:`apply`; (changed, notes). Forgets the state afterwards."""
        notes: list[str] = []
        state = self._state()
        changed = False
        if self.target.is_file() and state:
            current = _read(self.target)
            if BEGIN not in current and END not in current:
                notes.append(f"{TARGET} is not patched (replaced by a firmware update?): "
                             "left as it is")
            else:
                base = unpatch(current)
                original_file = self.state_dir / ORIGINAL
                if base is None:
                    # the block was damaged after patching: fall back to the saved original
                    if not original_file.is_file():
                        raise PatchError(f"{self.target} has a damaged CanBridge block and "
                                         "there is no saved original; not touching it")
                    base = _read(original_file)
                    notes.append("the CanBridge block was damaged: restored the saved original")
                elif sha256(base) != state.get("original_sha256"):
                    notes.append(f"{TARGET} was also changed by something else since it was "
                                 "patched: only the CanBridge block was removed")
                _write_atomic(self.target, base)
                changed = True
        for name, digest in dict(state.get("pages", {})).items():  # type: ignore[call-overload]
            dest = self.gui / name
            if dest.is_file():
                if sha256(_read(dest)) == digest:
                    dest.unlink()
                    changed = True
                else:
                    notes.append(f"{dest} was changed by someone else: left in place")
        for f in (STATE_FILE, ORIGINAL):
            (self.state_dir / f).unlink(missing_ok=True)
        if self.state_dir.is_dir() and not any(self.state_dir.iterdir()):
            self.state_dir.rmdir()
        return changed, notes

    def status(self) -> str:
        if not self.target.is_file():
            return "no classic gui"
        current = _read(self.target)
        if BEGIN in current:
            ok = sha256(current) == self._state().get("patched_sha256")
            return "patched" if ok else "patched (file changed since)"
        return "not patched"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CanBridge classic-gui patcher")
    ap.add_argument("command", choices=("apply", "restore", "status"))
    ap.add_argument("--gui", required=True, help="the classic gui's qml directory")
    ap.add_argument("--state", required=True, help="state directory (under /data)")
    ap.add_argument("--source", help="directory with PageSettings.snippet and pages (apply)")
    args = ap.parse_args(argv)
    gui = ClassicGui(Path(args.gui), Path(args.state))
    try:
        if args.command == "apply":
            if not args.source:
                ap.error("apply needs --source")
            print("changed" if gui.apply(Path(args.source)) else "unchanged")
        elif args.command == "restore":
            changed, notes = gui.restore()
            for n in notes:
                print(f"note: {n}", file=sys.stderr)
            print("changed" if changed else "unchanged")
        else:
            print(gui.status())
    except (PatchError, OSError, ValueError) as exc:
        print(f"classic gui: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
