"""The command reference is generated from --help; a stale page fails the suite (and so CI)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_reference_matches_the_cli():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_commands.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_every_docs_page_the_readme_links_exists():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert linked, "the README links no docs pages"
    assert [page for page in sorted(linked) if not (ROOT / page).exists()] == []
