"""Benchmark of ``canbridge-web`` on loopback: page server time, API latency under 20
concurrent clients, resident memory.

    .venv/bin/python -m bench.web_bench [--seconds 10] [--clients 20] [--json out.json]

Starts its own system on a private dbus-daemon (settings service, fake battery / Sunny Island
/ SuperB manager services from tests/web/fake_services.py, canbridge-web bound to 127.0.0.1
on a free port), logs in, then measures:

* server time of the status page and of every settings page (the app's own time, from the
  ``Server-Timing`` header), p50 and p95 over repeated requests;
* ``/api/status`` and ``/api/settings`` latency seen by 20 concurrent keep-alive clients
  (Python threads, one connection each), closed loop (each client sends its next request
  as soon as the answer arrives: the worst case) and paced (each client 5 requests/s, what
  20 open pages polling once a second would be many times over);
* resident memory (RSS) of the canbridge-web process after the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.procs import Proc, child_env, python_cmd  # noqa: E402
from tests.fixtures.venus import SettingsService, start_dbus_daemon  # noqa: E402

PASSWORD = "bench"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Client:
    """One keep-alive HTTP connection with the session cookie."""

    def __init__(self, host: str, port: int, cookie: str = "") -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.cookie = cookie

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=h)
        r = self.conn.getresponse()
        payload = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if "set-cookie" in hdrs:
            self.cookie = hdrs["set-cookie"].split(";", 1)[0]
        return r.status, hdrs, payload


def server_ms(headers: dict[str, str]) -> float:
    m = re.search(r"app;dur=([\d.]+)", headers.get("server-timing", ""))
    return float(m.group(1)) if m else float("nan")


def load(host: str, port: int, cookie: str, paths: list[str], *, clients: int,
         seconds: float, rate: float | None) -> dict[str, Any]:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        c = Client(host, port, cookie)
        mine: list[float] = []
        n = 0
        next_t = time.monotonic() + (k / clients) / rate if rate else 0.0
        while time.monotonic() < stop:
            if rate:
                delay = next_t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_t += 1 / rate
            t0 = time.perf_counter()
            try:
                status, _, _ = c.request("GET", paths[n % len(paths)])
            except OSError:
                status = 0
                c = Client(host, port, cookie)
            mine.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                with lock:
                    errors[0] += 1
            n += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {"requests": len(lat), "errors": errors[0], "rps": round(len(lat) / elapsed),
            "p50_ms": round(pct(lat, 50), 1), "p99_ms": round(pct(lat, 99), 1),
            "max_ms": round(max(lat), 1) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cbb-"))
    daemon = start_dbus_daemon(work)
    (work / "conf").mkdir()
    settings = SettingsService(daemon=daemon, datadir=work / "conf", real=False,
                               log=work / "settings.log")
    settings.start()
    pw = work / "pw"
    pw.write_bytes(bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(8, prefix=b"2a")))
    env = child_env(daemon.env())
    procs = [Proc(python_cmd("tests.web.fake_services", "--interval", "0.5"), env, "fake")]
    procs[0].wait_for("^ready$", 20)
    web = Proc(python_cmd("webui.main", "--listen", "127.0.0.1", "--port", "0",
                          "--password-file", str(pw)), env, "web")
    procs.append(web)
    try:
        _, line = web.wait_for(r"listening on http://127\.0\.0\.1:\d+/", 20)
        port = int(re.search(r":(\d+)/", line).group(1))  # type: ignore[union-attr]
        c = Client("127.0.0.1", port)
        _, _, body = c.request("GET", "/api/session")
        token = json.loads(body)["csrf_token"]
        status, _, _ = c.request("POST", "/api/login", {"password": PASSWORD},
                                 {"X-CSRF-Token": token})
        assert status == 200, status
        time.sleep(1.0)
        results: dict[str, Any] = {}
        results["rss_idle_mb"] = round(
            psutil.Process(web.proc.pid).memory_info().rss / 1024 / 1024, 1)
        pages = {"status": ["/"], "settings": [
            f"/settings/{g}" for g in ("superb", "superb_limits", "superb_alarms", "sma",
                                       "sma_charge", "sma_safety", "web", "general")],
                 "api_status": ["/api/status"], "api_settings": ["/api/settings"]}
        for name, paths in pages.items():
            times, walls = [], []
            for i in range(200):
                t0 = time.perf_counter()
                status, hdrs, _ = c.request("GET", paths[i % len(paths)])
                walls.append((time.perf_counter() - t0) * 1000)
                assert status == 200, (name, status)
                times.append(server_ms(hdrs))
            results[f"server_{name}"] = {"p50_ms": round(statistics.median(times), 2),
                                         "p95_ms": round(pct(times, 95), 2),
                                         "client_p50_ms": round(statistics.median(walls), 2)}
        sizes = {u: len(c.request("GET", u)[2]) for u in (
            "/", "/settings/sma_charge", "/static/app.css", "/static/app.js")}
        results["bytes"] = sizes
        api = ["/api/status", "/api/settings"]
        results["closed_loop"] = load("127.0.0.1", port, c.cookie, api, clients=args.clients,
                                      seconds=args.seconds, rate=None)
        results["paced_5rps"] = load("127.0.0.1", port, c.cookie, api, clients=args.clients,
                                     seconds=args.seconds, rate=5.0)
        proc = psutil.Process(web.proc.pid)
        results["rss_mb"] = round(proc.memory_info().rss / 1024 / 1024, 1)
        results["cpus"] = os.cpu_count()
    finally:
        for p in reversed(procs):
            p.stop()
        settings.stop()
        daemon.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
