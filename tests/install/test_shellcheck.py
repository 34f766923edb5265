"""shellcheck on every shell script of the installer, and on the scripts it generates."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.install.conftest import REPO, require_tool, run_installer


def shellcheck(*paths: Path) -> None:
    exe = require_tool("shellcheck")
    res = subprocess.run([exe, "-x", *map(str, paths)], capture_output=True, text=True,
                         cwd=REPO, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_installer_scripts() -> None:
    scripts = sorted((REPO / "install").glob("*.sh"))
    assert {p.name for p in scripts} >= {"install.sh", "lib.sh", "boot.sh", "remote-install.sh",
                                         "canmon.sh"}
    shellcheck(*scripts)


def test_generated_scripts(bundle_dir: Path, gx_root: Path) -> None:
    run_installer(bundle_dir, gx_root, "--services", "superb,sma,web", "--no-can-setup")
    generated = sorted((gx_root / "service").glob("*/run")) + \
        sorted((gx_root / "service").glob("*/log/run")) + [gx_root / "data/rc.local"]
    assert len(generated) == 7
    shellcheck(*generated)
