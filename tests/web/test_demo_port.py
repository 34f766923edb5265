"""``make demo`` when its web port is taken: it picks a free one and prints the URL (issue 14:
it died)."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_picks_a_free_port_when_its_port_is_taken() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sim.demo", "--duration", "25",
                             "--web-port", str(busy)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    url = None
    lines = []
    try:
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"Web page: (http://127\.0\.0\.1:(\d+)/)", line)
            if m:
                url, port = m.group(1), int(m.group(2))
        assert url is not None, "".join(lines)
        assert port != busy
        assert any(f"Port {busy} is taken" in ln for ln in lines), "".join(lines)
        status = None
        while status != 200 and time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/session")
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.3)
        assert status == 200, "the printed URL does not answer"
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, "".join(lines) + rest
    finally:
        taken.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
