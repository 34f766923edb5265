"""Generate the README's settings reference from settings_schema.json.

``python scripts/settings_doc.py`` rewrites the part of README.md between the
``<!-- settings-reference:begin -->`` and ``<!-- settings-reference:end -->`` markers;
``--check`` exits 1 if README.md is out of date (a test runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driver.schema import Schema, Setting, load_schema  # noqa: E402

BEGIN = "<!-- settings-reference:begin -->"
END = "<!-- settings-reference:end -->"


def _num(s: Setting, v: object) -> str:
    if s.type == "f" and isinstance(v, (int, float)):
        return f"{float(v):.{s.decimals or 0}f}"
    return str(v)


def _range(s: Setting) -> str:
    if s.options:
        return "; ".join(f"{o.value} = {o.label}" for o in s.options)
    if s.widget == "nodelist":
        return "node IDs 1-127, e.g. `1,2,5-7`"
    if s.type == "s":
        return f"text, up to {s.maxlength} characters"
    return f"{_num(s, s.min)} … {_num(s, s.max)}"


def render(schema: Schema) -> str:
    """The Markdown reference: one table per group."""
    out = [BEGIN, ""]
    for group in schema.groups:
        out.append(f"#### {group.label}")
        out.append("")
        out.append(group.help)
        out.append("")
        out.append("| Setting | Type | Default | Range | Unit | Meaning |")
        out.append("|---|---|---|---|---|---|")
        for s in schema.in_group(group.id):
            default = f"`{s.default}`" if s.type == "s" else _num(s, s.default)
            if s.type == "s" and s.default == "":
                default = "(empty)"
            help_text = s.help.replace("|", "\\|")
            out.append(f"| `{s.key}` | {s.type} | {default} | {_range(s)} | {s.unit} | "
                       f"**{s.label}.** {help_text} |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def updated(readme: str, schema: Schema) -> str:
    start = readme.index(BEGIN)
    end = readme.index(END) + len(END)
    return readme[:start] + render(schema) + readme[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = ap.parse_args(argv)
    readme_file = ROOT / "README.md"
    readme = readme_file.read_text(encoding="utf-8")
    new = updated(readme, load_schema())
    if args.check:
        if new != readme:
            sys.stderr.write("README.md settings reference is out of date: "
                             "run 'python scripts/settings_doc.py'\n")
            return 1
        return 0
    readme_file.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
