"""The web page offers the GX's CAN interfaces for the CanInterface settings and says when the
configured one does not exist or is the BMS-only port (issue 15). A fake Cerbo GX (MK1)
sysfs/udev root (``tests/fake_gx.py``) stands in for the GX."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.fake_gx import make_can_root
from tests.web.conftest import wait_until

P = "/Settings/CanBridge/"


@pytest.fixture
def on_cerbo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = make_can_root(tmp_path / "cerbo", "cerbo-gx-mk1")
    monkeypatch.setenv("CANBRIDGE_SYSROOT", str(root))
    monkeypatch.delenv("CANBRIDGE_CANLINK", raising=False)
    return root


def _page(client: Any, group: str) -> str:
    r = client.get(f"/settings/{group}")
    assert r.status_code == 200
    return str(r.data.decode())


def test_ports_offered_and_errors_shown(on_cerbo: Path, authed: tuple[Any, str],
                                        bus: Any) -> None:
    client, _ = authed
    page = _page(client, "superb")
    m = re.search(r'<datalist id="ports-Superb-CanInterface"[^>]*>(.*?)</datalist>', page, re.S)
    assert m, page
    assert re.findall(r'<option value="([^"]+)">', m.group(1)) == ["auto", "can0", "can1"]
    assert "can1 (BMS-Can port), BMS only" in m.group(1)
    assert 'list="ports-Superb-CanInterface"' in page
    assert "Found: can0 (VE.Can port), can1 (BMS-Can port)" in page
    # the default, auto, is this GX's VE.Can port: no message
    assert "does not exist" not in page and "reserved by Venus" not in page

    bus.set(P + "Superb/CanInterface", "vecan0")
    wait_until(lambda: "&#39;vecan0&#39; does not exist on this GX" in _page(client, "superb"),
               5, "the missing-port message")
    bus.set(P + "Superb/CanInterface", "can1")
    wait_until(lambda: "reserved by Venus for CAN-bus BMS" in _page(client, "superb"), 5,
               "the BMS-only refusal")
    # the Sunny Island page offers the same ports; auto is can1 here
    page = _page(client, "sma")
    assert 'list="ports-Sma-CanInterface"' in page and "second CAN port" in page
    assert "does not exist" not in page
