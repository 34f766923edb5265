"""Build the CanBridge release bundle: ``dist/canbridge-<version>.tar.gz`` (``make dist``).

The bundle is everything a GX needs, with no internet access on the GX:

* the code that runs there (``driver/``, ``webui/``, ``settings_schema.json``) — not ``sim/``,
  which only stands in for the GX off the device;
* ``vendor/``: the pure-Python dependencies listed in ``install/vendor.lock`` (downloaded once
  with pip, checked against the recorded sha256, cached in ``build/vendor-cache``);
* the GUI artifacts of the QML builder (``qml/build.py``, run first unless
  ``--no-gui-build``): ``gui-v2/<Name>.json`` (the gui-v2 plugin) and ``gui-v1/`` (the
  classic-gui snippet as ``PageSettings.snippet`` plus its page files);
* the installer (``install/``), ``INSTALL.md``, ``VERSION`` and ``SHA256SUMS`` (every file).

The archive is reproducible: sorted entries, fixed owner, modes and time
(``$SOURCE_DATE_EPOCH``, default 2024-01-01). Next to it ``<archive>.sha256``.

Usage::

    python install/make_dist.py [--out dist] [--no-vendor] [--gui-dir build/qml]
                                [--stage DIR] [--cache build/vendor-cache]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "install" / "vendor.lock"
NAME = "canbridge"

# What of the source tree goes into the bundle (relative to the checkout).
CODE_DIRS = ("driver", "webui")
CODE_FILES = ("settings_schema.json",)
INSTALL_FILES = (
    "install/install.sh",
    "install/lib.sh",
    "install/boot.sh",
    "install/canmon.sh",
    "install/config.sh",
    "install/diag.sh",
    "install/remote-install.sh",
    "install/classic_gui.py",
    "install/venus_settings.py",
    "install/vendor.lock",
)
EXECUTABLES = ("install/install.sh", "install/boot.sh", "install/canmon.sh",
               "install/config.sh", "install/diag.sh", "install/remote-install.sh")
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".so", ".pyd", ".c", ".h", ".orig", ".rej"}
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CLASSIC_SNIPPET = "PageSettings.CanBridge.snippet"  # the QML builder's name for it


class DistError(Exception):
    """The bundle cannot be built; the message says why."""


@dataclass(frozen=True)
class Pin:
    """One vendored dependency from ``vendor.lock``."""

    name: str
    version: str
    kind: str
    sha256: str
    packages: tuple[tuple[str, str], ...] = ()


def read_lock(path: Path = LOCK_FILE) -> list[Pin]:
    """Parse ``vendor.lock``."""
    pins = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("wheel", "sdist"):
            raise DistError(f"{path}:{n}: expected 'name version wheel|sdist sha256 ...'")
        packages = tuple(tuple(f.split("=", 1)) for f in fields[4:])
        if fields[2] == "sdist" and not packages:
            raise DistError(f"{path}:{n}: an sdist entry must name its package directories")
        pins.append(Pin(fields[0], fields[1], fields[2], fields[3].lower(),
                        packages))  # type: ignore[arg-type]
    return pins


def project_version() -> str:
    """The version in pyproject.toml."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(pin: Pin, cache: Path) -> Path | None:
    for f in sorted(cache.glob("*")):
        if f.is_file() and sha256_file(f) == pin.sha256:
            return f
    return None


def fetch(pin: Pin, cache: Path) -> Path:
    """The verified archive of ``pin`` (from the cache, else downloaded with pip)."""
    cache.mkdir(parents=True, exist_ok=True)
    hit = _cached(pin, cache)
    if hit is not None:
        return hit
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
               "--disable-pip-version-check"]
        if pin.kind == "wheel":
            cmd += ["--only-binary=:all:", "--platform", "any", "--python-version", "3.12",
                    "--implementation", "py"]
        else:
            cmd += ["--no-binary=:all:"]
        cmd.append(f"{pin.name}=={pin.version}")
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        files = [f for f in Path(tmp).iterdir() if f.is_file()]
        if res.returncode != 0 or len(files) != 1:
            raise DistError(f"pip could not download {pin.name}=={pin.version} "
                            f"({pin.kind}):\n{res.stdout}{res.stderr}")
        got = sha256_file(files[0])
        if got != pin.sha256:
            raise DistError(f"{files[0].name}: sha256 {got} does not match vendor.lock "
                            f"({pin.sha256})")
        dest = cache / files[0].name
        shutil.move(str(files[0]), dest)
        return dest


def _wanted(rel: str) -> bool:
    parts = rel.split("/")
    return not (SKIP_PARTS & set(parts)) and Path(rel).suffix not in SKIP_SUFFIXES


def unpack(pin: Pin, archive: Path, vendor: Path) -> None:
    """Put the pure-Python code of ``pin`` into ``vendor``."""
    if pin.kind == "wheel":
        if not archive.name.endswith("-none-any.whl"):
            raise DistError(f"{archive.name} is not a pure-Python wheel")
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                if name.split("/", 1)[0].endswith(".data"):
                    raise DistError(f"{archive.name} has a .data directory (not handled)")
                if name.endswith("/"):
                    continue
                if name.endswith(".dist-info/RECORD") or not _wanted(name):
                    continue
                target = vendor / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
        return
    with tarfile.open(archive) as tf:
        top = tf.getmembers()[0].name.split("/", 1)[0]
        members = {m.name: m for m in tf.getmembers()}
        for package, sub in pin.packages:
            prefix = f"{top}/{sub}/"
            found = False
            for name, m in members.items():
                if not (m.isfile() and name.startswith(prefix)):
                    continue
                rel = name[len(prefix):]
                if not _wanted(rel):
                    continue
                f = tf.extractfile(m)
                assert f is not None
                target = vendor / package / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read())
                found = True
            if not found:
                raise DistError(f"{archive.name} has no {sub}/")
        licences = [n for n in members if n.count("/") == 1
                    and n.split("/")[1].upper().startswith(("LICENSE", "COPYING"))]
        meta_dir = vendor / f"{pin.name}-{pin.version}.dist-info"
        meta_dir.mkdir(parents=True, exist_ok=True)
        for n in licences:
            f = tf.extractfile(members[n])
            assert f is not None
            (meta_dir / n.split("/")[1]).write_bytes(f.read())
        (meta_dir / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {pin.name}\nVersion: {pin.version}\n"
            f"Summary: pure-Python part of {archive.name} (C extension left out)\n"
        )


def vendor_all(vendor: Path, cache: Path) -> list[str]:
    """Fill ``vendor/`` from ``vendor.lock``; returns ``name==version`` of each."""
    done = []
    for pin in read_lock():
        unpack(pin, fetch(pin, cache), vendor)
        done.append(f"{pin.name}=={pin.version}")
    compiled = [p for p in vendor.rglob("*") if p.suffix in (".so", ".pyd", ".c")]
    if compiled:
        raise DistError(f"compiled files in vendor/: {compiled}")
    return done


def build_gui(gui_dir: Path) -> None:
    """Run the QML builder (``qml/build.py``) when the checkout has one."""
    builder = ROOT / "qml" / "build.py"
    if builder.is_file():
        res = subprocess.run([sys.executable, "-m", "qml.build", "--out", str(gui_dir)],
                             cwd=ROOT, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise DistError(f"the QML builder failed:\n{res.stdout}{res.stderr}")


def copy_gui(gui_dir: Path, stage: Path) -> list[str]:
    """Copy the QML builder's output into the bundle; returns what was found (for the report).

    From the builder's layout (``gui-v2/<Name>.json``; ``classic/PageSettings.CanBridge.snippet``
    and ``classic/*.qml``) to the bundle's: ``gui-v2/<Name>.json`` (the plugin file carries its
    QML as a resource, the loose QML is not needed) and ``gui-v1/PageSettings.snippet`` with the
    classic pages beside it.
    """
    found = []
    plugins = sorted((gui_dir / "gui-v2").glob("*.json")) if gui_dir.is_dir() else []
    if len(plugins) > 1:
        raise DistError(f"more than one gui-v2 plugin in {gui_dir / 'gui-v2'}: {plugins}")
    for p in plugins:
        (stage / "gui-v2").mkdir(exist_ok=True)
        shutil.copy2(p, stage / "gui-v2" / p.name)
        found.append(f"gui-v2/{p.name}")
    classic = gui_dir / "classic"
    snippet = classic / CLASSIC_SNIPPET
    if snippet.is_file():
        (stage / "gui-v1").mkdir()
        shutil.copy2(snippet, stage / "gui-v1" / "PageSettings.snippet")
        for page in sorted(classic.glob("*.qml")):
            shutil.copy2(page, stage / "gui-v1" / page.name)
        found += [f"gui-v1/{p.name}" for p in sorted((stage / "gui-v1").iterdir())]
    return found


def _copy_tree(src: Path, dest: Path) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and _wanted(rel):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)


def stage_bundle(stage: Path, *, vendor: bool, gui_dir: Path, cache: Path) -> dict[str, object]:
    """Lay the bundle out in ``stage`` (which must not exist). Returns a short report."""
    stage.mkdir(parents=True)
    for d in CODE_DIRS:
        _copy_tree(ROOT / d, stage / d)
    for f in (*CODE_FILES, *INSTALL_FILES):
        src = ROOT / f
        if not src.is_file():
            raise DistError(f"missing {f}")
        (stage / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, stage / f)
    if (ROOT / "docs" / "install.md").is_file():
        shutil.copy2(ROOT / "docs" / "install.md", stage / "INSTALL.md")
    version = project_version()
    (stage / "VERSION").write_text(version + "\n")
    vendored = vendor_all(stage / "vendor", cache) if vendor else []
    gui = copy_gui(gui_dir, stage)
    for p in stage.rglob("*"):
        rel = p.relative_to(stage).as_posix()
        if p.is_dir():
            p.chmod(0o755)
        else:
            p.chmod(0o755 if rel in EXECUTABLES else 0o644)
    lines = [f"{sha256_file(p)}  {p.relative_to(stage).as_posix()}"
             for p in sorted(stage.rglob("*")) if p.is_file()]
    (stage / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    (stage / "SHA256SUMS").chmod(0o644)
    return {"version": version, "vendored": vendored, "gui": gui}


def write_tarball(stage: Path, out: Path, top: str) -> Path:
    """A reproducible ``.tar.gz`` of ``stage`` under the directory name ``top``."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in [stage, *sorted(stage.rglob("*"))]:
            rel = p.relative_to(stage).as_posix()
            info = tf.gettarinfo(str(p), arcname=top if rel == "." else f"{top}/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = epoch
            info.mode = p.stat().st_mode & 0o777
            if p.is_file():
                with open(p, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                               filename="") as gz:
        gz.write(buf.getvalue())
    Path(f"{out}.sha256").write_text(f"{sha256_file(out)}  {out.name}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the CanBridge release bundle.")
    ap.add_argument("--out", default=str(ROOT / "dist"), help="output directory (dist/)")
    ap.add_argument("--no-vendor", action="store_true",
                    help="leave out vendor/ (tests with a development interpreter only)")
    ap.add_argument("--gui-dir", default=str(ROOT / "build" / "qml"),
                    help="the QML builder's output directory (build/qml)")
    ap.add_argument("--no-gui-build", action="store_true",
                    help="do not run the QML builder; take --gui-dir as it is")
    ap.add_argument("--cache", default=str(ROOT / "build" / "vendor-cache"),
                    help="download cache for vendored packages")
    ap.add_argument("--stage", help="also keep the unpacked bundle in this directory")
    args = ap.parse_args(argv)
    gui_dir = Path(args.gui_dir)
    try:
        if not args.no_gui_build:
            build_gui(gui_dir)
        version = project_version()
        top = f"{NAME}-{version}"
        with tempfile.TemporaryDirectory() as tmp:
            stage = Path(args.stage) if args.stage else Path(tmp) / top
            if stage.exists():
                shutil.rmtree(stage)
            report = stage_bundle(stage, vendor=not args.no_vendor, gui_dir=gui_dir,
                                  cache=Path(args.cache))
            suffix = "-novendor" if args.no_vendor else ""
            out = write_tarball(stage, Path(args.out) / f"{top}{suffix}.tar.gz", top)
    except DistError as exc:
        print(f"make_dist: {exc}", file=sys.stderr)
        return 1
    print(f"{out}")
    vendored: list[str] = report["vendored"]  # type: ignore[assignment]
    gui: list[str] = report["gui"]  # type: ignore[assignment]
    print(f"  vendored: {', '.join(vendored) or 'nothing (--no-vendor)'}")
    print(f"  gui: {', '.join(gui) or f'none (no QML build output in {gui_dir})'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
