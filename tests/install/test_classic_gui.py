"""The classic-gui patcher (install/classic_gui.py) on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from install.classic_gui import BEGIN, END, ClassicGui, PatchError, patch, unpatch
from tests.install.conftest import DATA, STOCK_PAGE

SNIPPET = (DATA / "gui/classic/PageSettings.CanBridge.snippet").read_text()


def source(tmp_path: Path) -> Path:
    """The classic-gui files as they are laid out in a bundle (gui-v1/)."""
    src = tmp_path / "gui-v1"
    src.mkdir()
    (src / "PageSettings.snippet").write_text(SNIPPET)
    (src / "PageCanBridge.qml").write_text((DATA / "gui/classic/PageCanBridge.qml").read_text())
    return src


def test_patch_inserts_the_entry_as_last_model_item_and_reverses() -> None:
    stock = STOCK_PAGE.read_text()
    patched = patch(stock, SNIPPET)
    lines = patched.splitlines()
    begin = lines.index("\t\t" + BEGIN)
    assert lines[begin + 1] == "\t\tMbSubMenu {"
    assert lines[begin + 2] == '\t\t\tdescription: "CanBridge"'
    assert lines[begin + 5] == "\t\t" + END
    assert lines[begin + 6] == "\t}"  # the end of the model
    assert unpatch(patched) == stock


def test_braces_in_strings_and_comments_do_not_confuse_it() -> None:
    stock = STOCK_PAGE.read_text()
    assert "{and}" in stock  # a brace inside a string in the stand-in page
    tricky = stock.replace('description: qsTr("Firmware")',
                           'description: qsTr("Firmware }") // a } in a comment {')
    assert unpatch(patch(tricky, SNIPPET)) == tricky


def test_crlf_files_keep_their_line_ends() -> None:
    stock = STOCK_PAGE.read_text().replace("\n", "\r\n")
    patched = patch(stock, SNIPPET)
    assert "\n" not in patched.replace("\r\n", "")
    assert unpatch(patched) == stock


def test_refuses_unknown_layouts_and_double_patching() -> None:
    with pytest.raises(PatchError, match="VisibleItemModel"):
        patch("MbPage {\n}\n", SNIPPET)
    with pytest.raises(PatchError, match="already"):
        patch(patch(STOCK_PAGE.read_text(), SNIPPET), SNIPPET)
    assert unpatch("no markers\n") is None


def test_stock_page_of_the_same_name_is_never_overwritten(tmp_path: Path) -> None:
    gui = tmp_path / "qml"
    gui.mkdir()
    (gui / "PageSettings.qml").write_text(STOCK_PAGE.read_text())
    (gui / "PageCanBridge.qml").write_text("// a stock file that happens to have this name\n")
    cg = ClassicGui(gui, tmp_path / "state")
    with pytest.raises(PatchError, match="not CanBridge's"):
        cg.apply(source(tmp_path))
    assert (gui / "PageSettings.qml").read_text() == STOCK_PAGE.read_text()


def test_apply_restore_round_trip_keeps_mode(tmp_path: Path) -> None:
    gui = tmp_path / "qml"
    gui.mkdir()
    page = gui / "PageSettings.qml"
    page.write_text(STOCK_PAGE.read_text())
    page.chmod(0o640)
    cg = ClassicGui(gui, tmp_path / "state")
    src = source(tmp_path)
    assert cg.apply(src) is True
    assert cg.status() == "patched"
    assert cg.apply(src) is False
    assert page.stat().st_mode & 0o777 == 0o640
    changed, notes = cg.restore()
    assert changed and not notes
    assert page.read_text() == STOCK_PAGE.read_text()
    assert page.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in gui.iterdir()) == ["PageSettings.qml"]
    assert not (tmp_path / "state").exists()
