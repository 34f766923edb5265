"""The short soak (issue 8): five minutes of the full simulated system with seeded random
faults must pass every check of ``bench/soak.py`` (``make soak DURATION=3600`` is the long one).

Set ``CANBRIDGE_SOAK_DURATION`` to run it longer or shorter (seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DURATION = float(os.environ.get("CANBRIDGE_SOAK_DURATION", "300"))


@pytest.mark.slow
@pytest.mark.timeout(DURATION + 240)
def test_short_soak_with_random_faults_passes(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", str(DURATION), "--seed", "8",
         "--mean-gap", "10", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=DURATION + 200,
    )
    assert out.exists(), run.stdout + run.stderr
    result = json.loads(out.read_text())
    artifacts = ROOT / os.environ.get("ARTIFACTS", "artifacts")
    if artifacts.is_dir():
        (artifacts / "soak-short.json").write_text(json.dumps(result, indent=1))
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, f"soak checks failed: {failed}\n{run.stdout[-6000:]}"
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    # the faults really happened (every kind comes once first), restarts included
    kinds = {f["kind"] for f in result["faults"]}
    assert len(kinds) >= 8, result["faults"]
    if {"term", "kill", "settings-restart"} <= kinds:
        assert result["details"]["restarts"]
