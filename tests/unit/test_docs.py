"""The README documents every setting and links only to docs that exist."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_settings_table_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "settings_table.py"), "--check",
                           str(ROOT / "README.md")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_setting_has_a_description():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import settings_table
    finally:
        sys.path.pop(0)
    rows = settings_table.rows()[2:]
    assert len(rows) > 20
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    undocumented = [c[0] for c in cells if not c[-1]]
    assert undocumented == []


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)[^)#]+)\)", text)
    assert links, "the README links to the docs"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []
