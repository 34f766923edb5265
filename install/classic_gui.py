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

The classic gui lives on the root file system, which Venus mounts **read-only**
(``read-only-rootfs`` in meta-victronenergy's venus-image.inc); writing it directly fails with
EROFS. Every write here therefore goes through :class:`WritableRootfs`: when (and only when)
something must change and the file system holding the gui is mounted read-only, Victron's own
``/opt/victronenergy/swupdate-scripts/remount-rw.sh`` makes it writable; after writing, every
written file is read back and compared, and the file system is left as it was found: the
``/etc/fstab`` that remount-rw.sh rewrites (to keep the rootfs writable after reboots) is put
back and the file system is remounted read-only. See docs/install.md.

Usage::

    classic_gui.py apply   --gui DIR --source DIR --state DIR [--root DIR]
    classic_gui.py restore --gui DIR --state DIR [--root DIR]
    classic_gui.py status  --gui DIR --state DIR

``--root`` is the GX's ``/`` (where ``etc/fstab`` and ``opt/victronenergy/swupdate-scripts``
are; a simulated GX in the tests).

``apply`` and ``restore`` print ``changed`` or ``unchanged`` (the installer restarts the gui
after a change). Exit code 1 with a message when nothing could be done safely.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

TARGET = "PageSettings.qml"
SNIPPET = "PageSettings.snippet"
BEGIN = "// CanBridge begin: added by the CanBridge installer (install.sh --uninstall removes it)"
END = "// CanBridge end"
STATE_FILE = "state.json"
ORIGINAL = "PageSettings.qml.orig"
MODEL_RE = re.compile(r"^(\s*)model\s*:\s*(VisibleItemModel|VisualItemModel)\s*\{\s*$")
# Victron's script that makes the read-only root file system writable (meta-victronenergy,
# meta-venus/recipes-support/swupdate-scripts: installed 0755 in /opt/victronenergy/
# swupdate-scripts). It remounts / read-write and sets the / line of /etc/fstab to "defaults".
REMOUNT_RW = "opt/victronenergy/swupdate-scripts/remount-rw.sh"
FSTAB = "etc/fstab"
MOUNTS = "/proc/self/mounts"


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


@dataclass(frozen=True)
class Mount:
    """The mount a path is on: its mount point and whether it is mounted read-only."""

    point: str
    readonly: bool


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: Path, mounts: str = MOUNTS) -> Mount | None:
    """The mount holding ``path`` (the last-mounted, longest matching mount point)."""
    real = os.path.realpath(path)
    best: Mount | None = None
    try:
        with open(mounts, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = _unescape(fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            best = Mount(point, "ro" in fields[3].split(","))
    return best


class WritableRootfs:
    """Make the file system holding ``directory`` writable for a ``with`` block, Venus's way.

    On entry: nothing happens when that file system is writable. When it is mounted read-only,
    ``<root>/opt/victronenergy/swupdate-scripts/remount-rw.sh`` is run (it remounts the rootfs
    read-write and changes ``/etc/fstab`` so it stays so after a reboot); the block runs only
    once the mount really is writable. On exit, when it was read-only: ``/etc/fstab`` is put
    back byte for byte and the file system is remounted read-only. A failure to remount is
    reported in :attr:`notes` (the written files are in place; a reboot makes it read-only).
    """

    def __init__(self, directory: Path, root: Path = Path("/"), mounts: str = MOUNTS) -> None:
        self.directory = directory
        self.root = root
        self.mounts = mounts
        self.was_readonly = False
        self.mount: Mount | None = None
        self.notes: list[str] = []
        self._fstab: bytes | None = None

    def __enter__(self) -> WritableRootfs:
        self.mount = mount_of(self.directory, self.mounts)
        if self.mount is None or not self.mount.readonly:
            return self
        self.was_readonly = True
        fstab = self.root / FSTAB
        self._fstab = fstab.read_bytes() if fstab.is_file() else None
        script = self.root / REMOUNT_RW
        if not (script.is_file() and os.access(script, os.X_OK)):
            raise PatchError(f"{self.mount.point} is mounted read-only and {script} is "
                             "missing: cannot write the classic gui")
        proc = subprocess.run([str(script)], capture_output=True, text=True, check=False,
                              timeout=60)
        after = mount_of(self.directory, self.mounts)
        if proc.returncode != 0 or after is None or after.readonly:
            self._put_back()
            raise PatchError(f"{script} did not make {self.mount.point} writable "
                             f"(exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()})")
        return self

    def _put_back(self) -> None:
        """Restore /etc/fstab and remount read-only (best effort, noted on failure)."""
        assert self.mount is not None
        fstab = self.root / FSTAB
        try:
            now = fstab.read_bytes() if fstab.is_file() else None
            if self._fstab is not None and now != self._fstab:
                _write_atomic_bytes(fstab, self._fstab)
            os.sync()
        except OSError as exc:
            self.notes.append(f"could not put back {fstab}: {exc}")
        proc = subprocess.run(["mount", "-o", "remount,ro", self.mount.point],
                              capture_output=True, text=True, check=False, timeout=60)
        after = mount_of(self.directory, self.mounts)
        if proc.returncode != 0 or after is None or not after.readonly:
            self.notes.append(f"could not remount {self.mount.point} read-only "
                              f"({(proc.stderr or proc.stdout).strip()}); it becomes "
                              "read-only again at the next reboot")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.was_readonly:
            self._put_back()


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` (same directory, rename), keeping its mode."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ClassicGui:
    """The patch state of one gui directory."""

    def __init__(self, gui: Path, state: Path, root: Path = Path("/"),
                 mounts: str = MOUNTS) -> None:
        self.gui = gui
        self.target = gui / TARGET
        self.state_dir = state
        self.root = root
        self.mounts = mounts
        self.notes: list[str] = []

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

    def _commit(self, writes: dict[Path, str], removals: list[Path]) -> None:
        """Write/remove files in the gui directory (rootfs made writable only for this), then
        check every written file reads back as written."""
        if not writes and not removals:
            return
        rootfs = WritableRootfs(self.gui, self.root, self.mounts)
        try:
            with rootfs:
                for path, data in writes.items():
                    _write_atomic(path, data)
                for path in removals:
                    path.unlink(missing_ok=True)
                os.sync()
                wrong = [str(p) for p, d in writes.items() if not p.is_file() or _read(p) != d]
                wrong += [str(p) for p in removals if p.exists()]
                if wrong:
                    raise PatchError(f"verification failed after writing: {', '.join(wrong)}")
        finally:
            self.notes += rootfs.notes

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
        writes = self._plan_pages(source, state)
        if patched != current:
            original_file = self.state_dir / ORIGINAL
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if not original_file.is_file() or _read(original_file) != base:
                _write_atomic(original_file, base)
            writes[self.target] = patched
        self._commit(writes, [])
        state.update({"original_sha256": sha256(base), "patched_sha256": sha256(patched)})
        self._save_state(state)
        return bool(writes)

    def _plan_pages(self, source: Path, state: dict[str, object]) -> dict[Path, str]:
        """The page files to write; records their digests in ``state``."""
        installed: dict[str, str] = dict(state.get("pages", {}))  # type: ignore[call-overload]
        writes: dict[Path, str] = {}
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
            writes[dest] = data
            installed[page.name] = sha256(data)
        state["pages"] = installed
        return writes

    def restore(self) -> tuple[bool, list[str]]:
        """Undo :meth:`apply`; (changed, notes). Forgets the state afterwards."""
        notes: list[str] = []
        state = self._state()
        writes: dict[Path, str] = {}
        removals: list[Path] = []
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
                writes[self.target] = base
        for name, digest in dict(state.get("pages", {})).items():  # type: ignore[call-overload]
            dest = self.gui / name
            if dest.is_file():
                if sha256(_read(dest)) == digest:
                    removals.append(dest)
                else:
                    notes.append(f"{dest} was changed by someone else: left in place")
        self._commit(writes, removals)
        notes += self.notes
        for f in (STATE_FILE, ORIGINAL):
            (self.state_dir / f).unlink(missing_ok=True)
        if self.state_dir.is_dir() and not any(self.state_dir.iterdir()):
            self.state_dir.rmdir()
        return bool(writes or removals), notes

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
    ap.add_argument("--root", default="/", help="the GX's / (default /)")
    args = ap.parse_args(argv)
    gui = ClassicGui(Path(args.gui), Path(args.state), Path(args.root))
    try:
        if args.command == "apply":
            if not args.source:
                ap.error("apply needs --source")
            try:
                changed = gui.apply(Path(args.source))
            finally:
                for n in gui.notes:
                    print(f"note: {n}", file=sys.stderr)
            print("changed" if changed else "unchanged")
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
