"""The install guide and the README say which Venus OS versions get which GUI (issue 15: the
guide promised remote gui-v2 pages on Venus 3.70-3.77, where plugins load only on the GX's own
screen) and use the menu names of Venus 3.70+."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _rows(text: str) -> dict[str, str]:
    """Markdown table rows keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3:
            rows[cells[0]] = " | ".join(cells[1:])
    return rows


def test_gui_per_venus_version_in_install_guide() -> None:
    text = (REPO / "docs/install.md").read_text(encoding="utf-8")
    assert "## Which GUI on which Venus OS" in text
    rows = _rows(text)
    assert "no plugin support" in rows["3.60 – 3.67"] and "classic gui" in rows["3.60 – 3.67"]
    assert "GX's own gui-v2 only" in rows["3.70 – 3.77"]
    assert "classic gui pages only" in rows["3.70 – 3.77"]
    assert rows["3.80 and later"].count("gui-v2 plugin") == 2


def test_gui_per_venus_version_in_readme() -> None:
    rows = _rows((REPO / "README.md").read_text(encoding="utf-8"))
    assert "no plugins" in rows["3.60 – 3.67"]
    assert re.search(r"classic pages \(plugins do not reach the browser before 3\.80\)",
                     rows["3.70 – 3.77"])
    assert rows["3.80 and later"].endswith("gui-v2 plugin | gui-v2 plugin")


def test_menu_names_of_venus_3_70() -> None:
    for name in ("docs/install.md", "README.md"):
        text = re.sub(r"\s+", " ", (REPO / name).read_text(encoding="utf-8"))
        assert "Access & Security" in text, name
        assert "Support status" in text, name
        for m in re.finditer(r"Modification checks", text):
            before = text[max(0, m.start() - 40):m.start()]
            assert re.search(r"[Bb]efore(\s+3\.70)?:", before), (name, before)
